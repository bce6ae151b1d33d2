"""Structured logs, request ids and the access log (issue 15, Build 5).

`--log_format json` writes one JSON object per line; every HTTP response carries
`x-request-id` (the client's when acceptable, else a fresh one); every line logged
while a request is handled carries that id, over HTTP and over gRPC (`x-request-id`
metadata); `--access_log` adds one line per HTTP request, and is off by default.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.auth.keys import TOKEN, add_key
from ferry.protos import message_class

X = [[1.0, 2.0, 3.0, 4.0]]
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"


def json_lines(server: FerryProcess) -> list[dict]:
    """Every line of the server's log, each of which must be one JSON object."""
    entries = []
    for line in server.log().splitlines():
        if line.strip():
            entry = json.loads(line)  # fails the test on a line that is not JSON
            assert isinstance(entry, dict), line
            entries.append(entry)
    return entries


def entries_with(server: FerryProcess, request_id: str, count: int = 1) -> list[dict]:
    """The log entries of `request_id`, once at least `count` were written."""
    found: list[dict] = []

    def written() -> bool:
        found[:] = [e for e in json_lines(server) if e.get("request_id") == request_id]
        return len(found) >= count

    wait_until(written, 10, message=f"{count} log line(s) of request {request_id}")
    return found


def test_json_lines_carry_time_level_logger_and_message(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    server = start_server(str(model_root), "--log_format", "json")
    assert server.predict("scale", {"instances": X}).status_code == 200
    entries = json_lines(server)
    assert len(entries) >= 3  # start-up lines at least
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    assert any(e["message"].startswith("REST API on http://") for e in entries)
    # Off by default: no access line for the predict above.
    assert not any(e["logger"] == "ferry.access" for e in entries)


def test_a_request_id_is_taken_or_made_and_returned(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    server = start_server(str(model_root))
    given = server.post(
        "/v1/models/scale:predict", json={"instances": X}, headers={"X-Request-ID": "order-17.a"}
    )
    assert given.status_code == 200 and given.headers["x-request-id"] == "order-17.a"
    made = [server.get("/v1/models/scale").headers["x-request-id"] for _ in range(3)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in made) and len(set(made)) == 3
    # An id that could forge log lines or grow them is replaced, not echoed.
    for bad in ("two\twords", "x" * 129, "<script>"):
        answer = server.get("/v2/health/live", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", answer.headers["x-request-id"]), bad
    # Errors carry one too (a refused predict, a route that does not exist).
    assert "x-request-id" in server.predict("absent", {"instances": X}).headers
    assert "x-request-id" in server.get("/no/such/path").headers


def test_every_line_of_an_http_request_carries_its_id_and_the_access_log_adds_one(
    start_server, model_root: Path, tmp_path: Path
) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    keys = tmp_path / "keys.json"
    token = add_key(keys, TOKEN, "ci").secret
    server = start_server(
        str(model_root),
        "--auth",
        str(keys),
        "--log_format",
        "json",
        "--log_level",
        "debug",
        "--access_log",
    )
    refused = server.post(
        "/v1/models/scale:predict", json={"instances": X}, headers={"X-Request-ID": "refused-1"}
    )
    assert refused.status_code in (401, 403)
    lines = entries_with(server, "refused-1", count=2)
    # The auth layer's line, written while the request was handled, and the access line.
    assert any(e["logger"] == "ferry.auth.middleware" and "refused" in e["message"] for e in lines)
    (access,) = [e for e in lines if e["logger"] == "ferry.access"]
    assert access["method"] == "POST" and access["path"] == "/v1/models/scale:predict"
    assert access["status"] == refused.status_code
    assert access["bytes"] == len(refused.content) and access["duration_ms"] >= 0

    ok = server.post(
        "/v1/models/scale:predict",
        json={"instances": X},
        headers={"X-Request-ID": "ok-2", "Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200
    (access,) = entries_with(server, "ok-2")
    assert access["status"] == 200 and access["bytes"] == len(ok.content)
    # Lines written outside requests (start-up) carry no id.
    assert any("request_id" not in e for e in json_lines(server))


def test_text_lines_show_the_request_id(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    server = start_server(str(model_root), "--access_log")
    server.get("/v1/models/scale", headers={"X-Request-ID": "text-3"})

    def logged() -> bool:
        return "ferry.access [text-3]: GET /v1/models/scale 200 " in server.log()

    wait_until(logged, 10, message="the access line in text form")


def test_a_grpc_call_logs_with_the_id_from_its_metadata(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    server = start_server(str(model_root), "--enable_model_control", "--log_format", "json")
    request = message_class("tensorflow.serving.ReloadConfigRequest")()
    request.config.model_config_list.SetInParent()  # empty: unload every model, logged
    with grpc.insecure_channel(server.grpc_target) as channel:
        channel.unary_unary(RELOAD)(
            request.SerializeToString(), timeout=30, metadata=[("x-request-id", "grpc-4")]
        )
    lines = entries_with(server, "grpc-4")
    assert any("every model is unloaded" in e["message"] for e in lines), lines
