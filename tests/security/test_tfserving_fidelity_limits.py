"""The paths that TF Serving fidelity added stay bounded: DT_STRING tensors in
`tensor_content` (TensorFlow's string list, which ferry now reads as TF Serving does) and
TF Serving's `JSON Value: {document} ...` errors, which print the request body.

A string list claims its string count in the shape and each length in a varint; a
message about a body could print the whole body. Each attack runs against a real server
while a good client is served within 1 s and memory is watched (+200 MB at most). The
attacks carry no code, so there is no marker file: what they could do is allocate or
stall.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from support.models import scale_model, string_model, write_model
from support.security import GoodClient, RssWatch
from support.server import FerryProcess

from ferry.protos import message_class

ATTACK_REPEATS = 5
ATTACK_SECONDS = 20.0
DT_STRING = 7


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(string_model(), root / "echo", 1)
    process = FerryProcess([str(root)], tmp_path_factory.mktemp("log") / "ferry.log")
    try:
        process.wait_ready()
        for model in ("scale", "echo"):
            process.wait_version(model, 1)
        yield process
    finally:
        process.stop()


def string_content_request(count: int, content: bytes):
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "echo"
    tensor = request.inputs["text"]
    tensor.dtype = DT_STRING
    tensor.tensor_shape.dim.add(size=count)
    tensor.tensor_content = content
    return request


def refused(server: FerryProcess, request) -> grpc.RpcError:
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as caught:
            rpc(request, timeout=10)
    return caught.value


def assert_refused_while_others_are_served(server: FerryProcess, attack) -> None:
    good = GoodClient(f"{server.url}/v1/models/scale:predict", {"instances": [[1, 2, 3, 4]]})
    with RssWatch(server.pid) as rss, good:
        deadline = time.monotonic() + ATTACK_SECONDS
        for _ in range(ATTACK_REPEATS):
            attack()
            assert time.monotonic() < deadline, "the attack took too long to be refused"
        while len(good.latencies) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    good.assert_served(max_latency=1.0)
    rss.assert_bounded()


def test_a_string_count_larger_than_the_content_is_refused_before_any_work(
    server: FerryProcess,
) -> None:
    """[10**7] strings claimed by 64 bytes: every string needs a length byte at least."""

    def attack() -> None:
        error = refused(server, string_content_request(10**7, b"\x00" * 64))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "Input 'text': tensor_content is not a list of 10000000 strings (DT_STRING)"
        )

    assert_refused_while_others_are_served(server, attack)


def test_string_lengths_beyond_the_content_are_refused(server: FerryProcess) -> None:
    """Two strings claiming 2**31 - 1 bytes each (five-byte varints) in an 11-byte body,
    and a varint that never ends: refused, nothing allocated for the claimed sizes."""
    huge = b"\xff\xff\xff\xff\x07" * 2 + b"x"
    endless = b"\xff" * 4096

    def attack() -> None:
        for count, content in ((2, huge), (2, endless)):
            error = refused(server, string_content_request(count, content))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details() == (
                f"Input 'text': tensor_content is not a list of {count} strings (DT_STRING)"
            )

    assert_refused_while_others_are_served(server, attack)


def test_a_message_about_a_large_body_prints_only_its_head(server: FerryProcess) -> None:
    """TF Serving prints the body in `JSON Value: ...` errors; of a 2 MB body ferry
    prints 256 characters, and writing them costs no more than for a small body. (The
    body's parse, not the message, is what its size costs: ferry.codecs.json_parser.)"""
    rows = b"[1.0, 2.0, 3.0, 4.0], " * 100_000
    body = b'{"instances": [' + rows + b'[1, 2, 3, 4]], "inputs": 1}'

    def attack() -> None:
        response = requests.post(
            f"{server.url}/v1/models/scale:predict",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error.startswith('JSON Value: {\n    "instances": [[1.0, 2.0, 3.0, 4.0], ')
        assert error.endswith(
            " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        )
        assert len(error) < 400

    assert_refused_while_others_are_served(server, attack)
