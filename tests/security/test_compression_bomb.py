"""A compressed body cannot make ferry allocate more than `--max_request_bytes`: the
inflated size is checked while inflating, and the request refused at the limit.

The attack: a 4 MB gzip body (well under the 64 MB default limit as sent) that inflates
to 4 GiB of zeros, sent as a V2 inference request and as a TF Serving predict. Each is
refused in its protocol's form (V2: Triton's 400; TF Serving REST: 413) while a good
client keeps being served within 1 s and the server's memory grows by 200 MB at most.
No code is carried, so there is no marker file to check.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator

import pytest
import requests
from support.models import scale_model, write_model
from support.security import GoodClient, RssWatch
from support.server import FerryProcess

DEFAULT_LIMIT = 64 * 1024 * 1024  # --max_request_bytes' default
INFLATED_MIB = 4096
ATTACK_REPEATS = 2
ATTACK_SECONDS = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root)], log).wait_ready()
    server.wait_version("scale", 1)
    yield server
    server.stop()


def gzip_bomb(inflated_mib: int) -> bytes:
    """A gzip stream of `inflated_mib` MiB of zeros, built in milliseconds: after a full
    flush, each further MiB of zeros compresses to the same bytes, so one block is
    repeated. (Its trailer is left out: the server must stop long before the end.)"""
    mib = b"\0" * (1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    first = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + block * (inflated_mib - 1)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    body = gzip_bomb(INFLATED_MIB)
    assert len(body) < DEFAULT_LIMIT // 8  # as sent, far under the limit
    return body


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        (
            "/v2/models/scale/infer",
            400,
            f"Decompressed data size exceeds the maximum allowed value of {DEFAULT_LIMIT} "
            "bytes. Use --max_request_bytes to increase the limit.",
        ),
        (
            "/v1/models/scale:predict",
            413,
            f"Request body inflates to more than the limit of {DEFAULT_LIMIT} bytes "
            "(--max_request_bytes)",
        ),
    ],
    ids=["v2", "tfserving"],
)
def test_gzip_bomb_is_refused_while_inflating(
    server: FerryProcess, bomb: bytes, path: str, status: int, error: str
) -> None:
    good = GoodClient(f"{server.url}/v1/models/scale:predict", {"instances": [[1, 2, 3, 4]]})
    deadline = time.monotonic() + ATTACK_SECONDS
    answers = []
    with RssWatch(server.pid) as rss, good:
        for _ in range(ATTACK_REPEATS):
            if time.monotonic() > deadline:
                break
            response = requests.post(
                server.url + path,
                data=bomb,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                timeout=ATTACK_SECONDS,
            )
            answers.append((response.status_code, response.json()))

    assert answers == [(status, {"error": error})] * ATTACK_REPEATS
    good.assert_served(max_latency=1.0)
    rss.assert_bounded()
