"""Compressed request bodies: `Content-Encoding: gzip` / `deflate` as tritonclient sends
them (`request_compression_algorithm`), Triton's answers for an encoding it does not
take and for a body that inflates past the limit, and TF Serving's rule on its REST API
(gzip inflated, other encodings ignored)."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from support.models import scale_model, two_input_model, write_model
from support.server import FerryProcess

LIMIT = 1 << 20  # --max_request_bytes of this module's server
A = np.arange(8, dtype=np.float32).reshape(4, 2)
B = np.full((4, 2), 0.5, dtype=np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(two_input_model(), root / "pair", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), "--max_request_bytes", str(LIMIT)], log).wait_ready()
    for model in ("scale", "pair"):
        server.wait_version(model, 1)
    yield server
    server.stop()


def pair_inputs(module, binary: bool) -> list:
    inputs = []
    for name, array in (("a", A), ("b", B)):
        tensor = module.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_compressed_requests(server: FerryProcess, algorithm: str, binary: bool):
    """With binary inputs, Inference-Header-Content-Length counts the JSON header before
    compression, as tritonclient sends it."""
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")

    result = client.infer(
        "pair",
        pair_inputs(httpclient, binary),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )

    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)
    np.testing.assert_array_equal(result.as_numpy("prod"), A * B)


def test_tritonclient_aio_compressed_request(server: FerryProcess) -> None:
    async def infer():
        async with httpclient_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}") as c:
            return await c.infer(
                "pair", pair_inputs(httpclient_aio, True), request_compression_algorithm="gzip"
            )

    result = asyncio.run(infer())

    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)


def scale_body() -> bytes:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    return orjson.dumps({"inputs": [x]})


def post_v2(server: FerryProcess, body: bytes, encoding: str):
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    return server.post("/v2/models/scale/infer", data=body, headers=headers)


def test_identity_and_no_encoding_are_taken_as_sent(server: FerryProcess) -> None:
    for encoding in ("identity", ""):
        response = post_v2(server, scale_body(), encoding)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]


def test_unknown_encoding_gets_tritons_501(server: FerryProcess) -> None:
    response = post_v2(server, scale_body(), "br")

    assert response.status_code == 501
    assert response.json() == {"error": "Unsupported compression type"}
    assert response.headers["Accept-Encoding"] == "gzip, deflate"


def test_a_body_that_inflates_past_the_limit_is_refused(server: FerryProcess) -> None:
    padded = orjson.dumps({"inputs": [], "id": "x" * (LIMIT + 10)})
    compressed = gzip.compress(padded)
    assert len(compressed) < LIMIT // 100  # sent, it is well within the limit

    response = post_v2(server, compressed, "gzip")

    assert response.status_code == 400
    assert response.json() == {
        "error": f"Decompressed data size exceeds the maximum allowed value of {LIMIT} bytes. "
        "Use --max_request_bytes to increase the limit."
    }


def test_a_body_at_the_limit_once_inflated_is_taken(server: FerryProcess) -> None:
    body = scale_body()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT

    response = post_v2(server, zlib.compress(padded), "deflate")

    assert response.status_code == 200, response.text


def test_corrupt_and_truncated_compressed_bodies(server: FerryProcess) -> None:
    corrupt = post_v2(server, b"this is not gzip", "gzip")
    truncated = post_v2(server, gzip.compress(scale_body())[:-12], "gzip")

    assert corrupt.status_code == 400
    assert corrupt.json()["error"].startswith("The request body is not valid gzip data")
    assert truncated.status_code == 400
    assert truncated.json()["error"] == (
        "The request body (gzip) ends before its compressed data does"
    )


# -- TF Serving's REST API ---------------------------------------------------------------------


def predict(server: FerryProcess, body: bytes, encoding: str):
    return server.post(
        "/v1/models/scale:predict", data=body, headers={"Content-Encoding": encoding}
    )


def test_tfserving_rest_takes_gzip_and_ignores_other_encodings(server: FerryProcess) -> None:
    """TF Serving's HTTP server inflates a body whose Content-Encoding contains "gzip" and
    takes any other as it is, so a deflated body is then not JSON."""
    body = orjson.dumps({"instances": [[1, 2, 3, 4]]})

    gzipped = predict(server, gzip.compress(body), "gzip")
    deflated = predict(server, zlib.compress(body), "deflate")
    plain_with_other_name = predict(server, body, "br")

    assert gzipped.status_code == 200, gzipped.text
    assert gzipped.json() == {"predictions": [[2, 4, 6, 8]]}
    assert deflated.status_code == 400
    assert plain_with_other_name.json() == {"predictions": [[2, 4, 6, 8]]}


def test_tfserving_rest_refuses_a_body_that_inflates_past_the_limit(server: FerryProcess):
    body = gzip.compress(b"{" + b" " * (LIMIT + 1) + b"}")

    response = predict(server, body, "gzip")

    assert response.status_code == 413
    assert response.json() == {
        "error": f"Request body inflates to more than the limit of {LIMIT} bytes "
        "(--max_request_bytes)"
    }
