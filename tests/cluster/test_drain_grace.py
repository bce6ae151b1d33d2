"""`ferry serve --drain_grace_seconds`: after SIGTERM a replica reports "not ready" but
goes on serving REST and gRPC for the grace, so a balancer's readiness checks take it
out before its listeners close (docs/cluster.md). Needs no network namespaces."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
import requests
from support.dataplane import rust_front_or_skip
from support.models import scale_model, write_model
from support.server import wait_until

ONES = {"instances": [[1.0, 1.0, 1.0, 1.0]]}
GRACE_S = 2.0


@pytest.fixture(params=["python", "rust"])
def front(request: pytest.FixtureRequest) -> str:
    """Both REST fronts follow one drain-grace rule (ferry.drain_grace)."""
    if request.param == "rust":
        rust_front_or_skip()
    return request.param


def test_after_sigterm_readiness_fails_while_requests_are_still_served(
    model_root: Path, start_server, front: str
) -> None:
    write_model(scale_model(2.0), model_root / "m", 1)
    server = start_server(
        str(model_root), "--drain_grace_seconds", str(GRACE_S), "--dataplane", front
    )
    server.wait_version("m", 1)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: server.get("/v2/health/ready").status_code == 503, 1.0, message="503")
    # Within the grace: every API still answers, new connections included.
    with requests.Session() as fresh:
        response = fresh.post(f"{server.url}/v1/models/m:predict", json=ONES, timeout=5)
    assert response.json() == {"predictions": [[2.0] * 4]}
    assert server.get("/v2/health/live").status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=1.0)
    assert time.monotonic() - signalled < GRACE_S  # all of that inside the grace
    assert server.process.wait(GRACE_S + 30) == 0
    assert time.monotonic() - signalled >= GRACE_S
    assert "drain_grace_seconds" in server.log()


def test_a_second_signal_ends_the_grace(model_root: Path, start_server, front: str) -> None:
    write_model(scale_model(2.0), model_root / "m", 1)
    server = start_server(str(model_root), "--drain_grace_seconds", "60", "--dataplane", front)
    server.wait_version("m", 1)
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: server.get("/v2/health/ready").status_code == 503, 1.0, message="503")
    assert server.predict("m", ONES).status_code == 200
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert time.monotonic() - signalled < 30  # not the 60 s grace
