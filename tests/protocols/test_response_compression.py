"""Compressed answers: a V2 inference answer in gzip or deflate as `Accept-Encoding` asks
(Triton's rule, tritonclient's `response_compression_algorithm`), with binary outputs
too; never errors, other routes or TF Serving's REST API (whose server has no response
compression); and ferry's size threshold and flags.

Raw answers are read with http.client: requests would inflate them unseen."""

from __future__ import annotations

import gzip
import http.client
import zlib
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from support.models import scale_model, write_model
from support.server import FerryProcess

from ferry.protocols.request_encoding import Coding
from ferry.protocols.response_encoding import DEFAULT_MIN_BYTES, accepted_coding

WIDE = 256
X = np.arange(4 * WIDE, dtype=np.float32).reshape(4, WIDE)  # a 4 KB answer or more
SMALL = np.array([[1, 2, 3, 4]], dtype=np.float32)  # an answer of about 120 bytes
INFLATE = {"gzip": gzip.decompress, "deflate": zlib.decompress}


def start(tmp_path_factory: pytest.TempPathFactory, *flags: str) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(scale_model(2.0, width=WIDE), root / "wide", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), *flags], log).wait_ready()
    for model in ("scale", "wide"):
        server.wait_version(model, 1)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    """Default settings."""
    server = start(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def every_size(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    """Triton's behaviour exactly: every non-empty answer compressed, at zlib's level 6."""
    server = start(
        tmp_path_factory,
        "--http_response_compression_min_bytes",
        "0",
        "--http_response_compression_level",
        "6",
    )
    yield server
    server.stop()


def raw_post(
    server: FerryProcess, path: str, body: bytes, accept: str | None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the body exactly as sent."""
    headers = {"Content-Type": "application/json"}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def infer_body(array: np.ndarray, binary_output: bool = False) -> bytes:
    request: dict = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": list(array.shape),
                "data": array.flatten().tolist(),
            }
        ]
    }
    if binary_output:
        request["parameters"] = {"binary_data_output": True}
    return orjson.dumps(request)


def infer(server: FerryProcess, model: str, array: np.ndarray, accept: str | None, **kw):
    return raw_post(server, f"/v2/models/{model}/infer", infer_body(array, **kw), accept)


def y_of(body: bytes) -> np.ndarray:
    output = orjson.loads(body)["outputs"][0]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


# -- tritonclient ----------------------------------------------------------------------------


class SeenEncodings:
    """Records the Content-Encoding of each answer the client receives: the client's own
    transport, watched, so the test knows the answer it decoded came compressed."""

    def __init__(self, client: httpclient.InferenceServerClient) -> None:
        self.seen: list[str | None] = []
        real_post = client._post

        def post(*args, **kwargs):
            response = real_post(*args, **kwargs)
            self.seen.append(response.get("Content-Encoding"))
            return response

        client._post = post


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_reads_compressed_answers(
    server: FerryProcess, algorithm: str, binary: bool
) -> None:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    encodings = SeenEncodings(client)
    x = httpclient.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X, binary_data=binary)
    y = httpclient.InferRequestedOutput("y", binary_data=binary)

    result = client.infer("wide", [x], outputs=[y], response_compression_algorithm=algorithm)

    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
    assert encodings.seen == [algorithm]


def test_tritonclient_without_compression_gets_plain_answers(server: FerryProcess) -> None:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    encodings = SeenEncodings(client)
    x = httpclient.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X)

    result = client.infer("wide", [x])

    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
    assert encodings.seen == [None]


# -- raw requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_accept_encoding_gets_a_compressed_answer(server: FerryProcess, algorithm: str):
    _, _, plain = infer(server, "wide", X, None)

    status, headers, body = infer(server, "wide", X, algorithm)

    assert status == 200, body[:300]
    assert headers["content-encoding"] == algorithm
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body) < len(plain)
    assert INFLATE[algorithm](body) == plain
    np.testing.assert_array_equal(y_of(plain), X * 2)


def test_binary_outputs_header_length_counts_the_json_before_compression(
    server: FerryProcess,
) -> None:
    _, plain_headers, plain = infer(server, "wide", X, None, binary_output=True)

    status, headers, body = infer(server, "wide", X, "gzip", binary_output=True)

    assert status == 200, body[:300]
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    assert length == int(plain_headers["inference-header-content-length"])
    inflated = gzip.decompress(body)
    assert inflated == plain
    header = orjson.loads(inflated[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": X.nbytes}
    y = np.frombuffer(inflated[length:], dtype=np.float32).reshape(X.shape)
    np.testing.assert_array_equal(y, X * 2)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, deflate", "gzip"),  # requests' own: the first of equal weight
        ("deflate, gzip", "deflate"),
        ("deflate;q=0.5, gzip", "gzip"),
        ("gzip;q=0.4,deflate;q=0.6", "deflate"),
        ("identity;q=1, gzip;q=0.5", None),
        ("gzip;q=0", None),
        ("br", None),
        ("*", None),  # Triton takes no wildcard
        ("GZIP", None),  # nor another case
    ],
)
def test_which_coding_as_triton_chooses(
    server: FerryProcess, accept: str, expected: str | None
) -> None:
    status, headers, body = infer(server, "wide", X, accept)

    assert status == 200
    assert headers.get("content-encoding") == expected
    inflated = body if expected is None else INFLATE[expected](body)
    np.testing.assert_array_equal(y_of(inflated), X * 2)


def test_accepted_coding_reads_weights_as_tritons_stod() -> None:
    assert accepted_coding(None) is Coding.IDENTITY
    assert accepted_coding(b"") is Coding.IDENTITY
    assert accepted_coding(b"   gzip") is Coding.GZIP
    assert accepted_coding(b"gzip ") is Coding.IDENTITY  # the name keeps trailing spaces
    assert accepted_coding(b"gzip;q=0.5abc") is Coding.GZIP  # stod stops at the number
    assert accepted_coding(b"gzip;q=x, deflate;q=0.1") is Coding.DEFLATE  # unreadable: skipped
    assert accepted_coding(b"gzip;q=1e999, deflate;q=0.1") is Coding.DEFLATE  # out of range
    assert accepted_coding(b"gzip;q=nan") is Coding.IDENTITY
    assert accepted_coding(b";q=1, deflate") is Coding.DEFLATE  # a weight without a name
    assert accepted_coding(b"gzip ;q=1") is Coding.IDENTITY


def test_a_small_answer_goes_as_it_is(server: FerryProcess) -> None:
    status, headers, body = infer(server, "scale", SMALL, "gzip")

    assert status == 200
    assert len(body) < DEFAULT_MIN_BYTES
    assert "content-encoding" not in headers
    np.testing.assert_array_equal(y_of(body), SMALL * 2)


def test_with_no_threshold_a_small_answer_is_compressed(every_size: FerryProcess) -> None:
    status, headers, body = infer(every_size, "scale", SMALL, "deflate")

    assert status == 200
    assert headers["content-encoding"] == "deflate"
    np.testing.assert_array_equal(y_of(zlib.decompress(body)), SMALL * 2)


def test_errors_and_other_routes_are_never_compressed(every_size: FerryProcess) -> None:
    """As in Triton: only a successful inference answer is compressed."""
    unknown = infer(every_size, "nope", SMALL, "gzip")
    bad = raw_post(every_size, "/v2/models/scale/infer", b"{not json", "gzip")
    index = raw_post(every_size, "/v2/repository/index", b"{}", "gzip")

    for status, headers, body in (unknown, bad, index):
        assert "content-encoding" not in headers, (status, body[:200])
        orjson.loads(body)
    assert unknown[0] == 404
    assert bad[0] == 400
    assert index[0] == 200

    connection = http.client.HTTPConnection("127.0.0.1", every_size.port, timeout=30)
    try:
        connection.request("GET", "/v2/models/wide", headers={"Accept-Encoding": "gzip"})
        metadata = connection.getresponse()
        assert metadata.status == 200
        assert metadata.getheader("Content-Encoding") is None
        assert orjson.loads(metadata.read())["name"] == "wide"
    finally:
        connection.close()


# -- TF Serving's REST API ---------------------------------------------------------------------


def test_tfserving_rest_never_compresses(every_size: FerryProcess) -> None:
    """TF Serving's HTTP server has no response compression: Accept-Encoding is ignored."""
    body = orjson.dumps({"instances": X.tolist()})

    status, headers, answer = raw_post(every_size, "/v1/models/wide:predict", body, "gzip")

    assert status == 200, answer[:300]
    assert len(answer) > DEFAULT_MIN_BYTES
    assert "content-encoding" not in headers
    np.testing.assert_array_equal(np.array(orjson.loads(answer)["predictions"]), X * 2)


# -- the switch --------------------------------------------------------------------------------


def test_compression_switched_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start(tmp_path_factory, "--http_response_compression=false")
    try:
        status, headers, body = infer(server, "wide", X, "gzip")
    finally:
        server.stop()

    assert status == 200
    assert "content-encoding" not in headers
    np.testing.assert_array_equal(y_of(body), X * 2)
