"""A small OTLP/HTTP trace receiver: what an OpenTelemetry collector does with
`POST /v1/traces`, enough for tests (OpenTelemetry's own collector is not installable
here). It decodes each ExportTraceServiceRequest with opentelemetry-proto and keeps
the spans."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_BODY_BYTES = 16 << 20


@dataclass
class ReceivedSpans:
    spans: list = field(default_factory=list)  # opentelemetry.proto.trace.v1.Span messages
    services: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list:
        with self.lock:
            return [span for span in self.spans if span.name == name]

    def wait_for(self, name: str, count: int, timeout: float = 15.0) -> list:
        """At least `count` spans called `name`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.named(name)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {count} span(s) '{name}': {self.names()}")

    def names(self) -> list[str]:
        with self.lock:
            return [span.name for span in self.spans]


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, ReceivedSpans]]:
    """(base URL, received spans) of a receiver on a free loopback port."""
    received = ReceivedSpans()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            if self.path != "/v1/traces" or not 0 < length <= MAX_BODY_BYTES:
                self.send_error(404 if self.path != "/v1/traces" else 400)
                return
            body = self.rfile.read(length)
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            with received.lock:
                for resource_spans in request.resource_spans:
                    for attribute in resource_spans.resource.attributes:
                        if attribute.key == "service.name":
                            received.services.add(attribute.value.string_value)
                    for scope_spans in resource_spans.scope_spans:
                        received.spans.extend(scope_spans.spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
