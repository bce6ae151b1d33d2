"""OpenTelemetry traces over OTLP/HTTP (issue 15, Build 5): off by default, and then
OpenTelemetry is not even imported; with `--otlp_endpoint` (or the standard
OTEL_EXPORTER_OTLP_ENDPOINT) every request has a `ferry.request` span with `decode` and
`queue` children, and every model run a `batch` span linked to the requests it carried,
with a `run` child. Checked against a real OTLP receiver (tests/support/otlp_receiver.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from support.models import scale_model, sleepy_model, write_model
from support.otlp_receiver import otlp_receiver

X = [[1.0, 2.0, 3.0, 4.0]]
# The SDK exports every 5 s by default; the tests need not wait that long.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def attributes(span) -> dict:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_without_an_endpoint_opentelemetry_is_never_imported() -> None:
    code = (
        "import sys\n"
        "from ferry.repository.catalog import FixedCatalog\n"
        "from ferry.server import FerryServer, ServerOptions\n"
        "import ferry.cli\n"
        "server = FerryServer(FixedCatalog([]), ServerOptions())\n"
        "assert server.tracer is None and server.inference.tracer is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_request_and_batch_spans_with_their_links(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    with otlp_receiver() as (url, received):
        server = start_server(str(model_root), "--otlp_endpoint", url, env=FAST_EXPORT)
        answer = server.post(
            "/v1/models/scale:predict", json={"instances": X}, headers={"X-Request-ID": "t-1"}
        )
        assert answer.status_code == 200
        v2 = server.post(
            "/v2/models/scale/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[0]}]},
        )
        assert v2.status_code == 200, v2.text
        requests = received.wait_for("ferry.request", 2)
        batches = received.wait_for("batch", 2)
        decodes = received.wait_for("decode", 2)
        queues = received.wait_for("queue", 2)
        runs = received.wait_for("run", 2)
    assert received.services == {"ferry"}
    (rest,) = [s for s in requests if attributes(s)["ferry.request_id"] == "t-1"]
    assert attributes(rest)["ferry.api"] == "rest" and attributes(rest)["ferry.model"] == "scale"
    assert attributes(rest)["ferry.version"] == 1
    assert rest.parent_span_id == b""  # a root span
    # decode and queue are children of their request, in its trace.
    for children in (decodes, queues):
        (child,) = [c for c in children if c.parent_span_id == rest.span_id]
        assert child.trace_id == rest.trace_id
        assert rest.start_time_unix_nano <= child.start_time_unix_nano
        assert child.end_time_unix_nano <= rest.end_time_unix_nano
    # The batch that ran it links to the request; the run is the batch's child.
    (batch,) = [b for b in batches if any(link.span_id == rest.span_id for link in b.links)]
    (link,) = batch.links
    assert link.trace_id == rest.trace_id
    assert batch.trace_id != rest.trace_id and batch.parent_span_id == b""
    assert attributes(batch)["ferry.rows"] == 1
    (run,) = [r for r in runs if r.parent_span_id == batch.span_id]
    assert run.trace_id == batch.trace_id
    assert batch.start_time_unix_nano <= run.start_time_unix_nano <= run.end_time_unix_nano
    assert run.end_time_unix_nano <= batch.end_time_unix_nano


def test_one_batch_links_every_request_it_carried(start_server, model_root: Path) -> None:
    # A model that runs for a few tenths of a second: while the first request runs, the
    # others queue up and share the next batch.
    write_model(sleepy_model(iterations=3000), model_root / "sleepy", 1)
    with otlp_receiver() as (url, received):
        server = start_server(
            str(model_root), env={**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": url}
        )
        statuses: list[int] = []

        def call() -> None:
            answer = server.post("/v1/models/sleepy:predict", json={"instances": X}, timeout=60)
            statuses.append(answer.status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [200] * 6
        requests = received.wait_for("ferry.request", 6)
        batches = received.wait_for("batch", 2)
    request_ids = {s.span_id for s in requests}
    linked = [link.span_id for b in batches for link in b.links]
    assert sorted(linked) == sorted(request_ids)  # every request in exactly one batch
    shared = max(batches, key=lambda b: len(b.links))
    assert len(shared.links) >= 2 and attributes(shared)["ferry.rows"] == len(shared.links)


def test_a_failed_request_is_an_error_span(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "scale", 1)
    with otlp_receiver() as (url, received):
        server = start_server(str(model_root), "--otlp_endpoint", url, env=FAST_EXPORT)
        bad = server.predict("scale", {"instances": [[1.0, 2.0]]})  # wrong width
        assert bad.status_code == 400
        (span,) = received.wait_for("ferry.request", 1)
        (decode,) = received.wait_for("decode", 1)
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert "InvalidArgument" in attributes(span)["ferry.error"]
    assert decode.parent_span_id == span.span_id
    assert decode.status.code == decode.status.STATUS_CODE_ERROR
    assert received.named("batch") == []  # it never reached a batch
