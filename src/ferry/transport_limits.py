"""The limits ferry puts on HTTP and gRPC connections, with their defaults and the reasons
for them, in one place (the `ferry serve` flags, the HTTP protocol and the gRPC server
options all read them from here).

What they defend against: a client that sends an endless request head (memory and
event-loop time: httptools grows an unfinished header by concatenation, so a 128 MB
header took 35 s to ingest while every other client waited), a client that connects and
sends nothing or dribbles its body (one task and one file descriptor held forever), and enough
connections to use up the process's file descriptors (every further client, HTTP or
gRPC, then got a reset).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

# Request head (request line + headers). Envoy refuses heads over 60 KiB and more than 100
# headers by default, Node 16 KiB, nginx 8 KiB per line (4 lines x 8 KiB in all); TF
# Serving (libevent evhttp) and Triton (libevhtp) set no limit. 64 KiB / 100 headers take
# any real client, SigV4 and bearer headers included (under 2 KiB), with room to spare.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
# From connection open (or the request's first byte on a kept-alive connection) until
# the head is complete: Apache's mod_reqtimeout starts at 20 s, nginx and Node use 60 s.
# A head is a few hundred bytes, so 20 s is generous even for a phone on a bad link.
DEFAULT_HEADER_TIMEOUT_SECONDS = 20.0
# From the end of the head until the whole body arrived (a total, not a per-read idle
# timer: a per-read timer lets a client dribble a byte every few seconds forever).
# 300 s, like Node's requestTimeout, carries a 64 MB body (--max_request_bytes) at
# 1.8 Mbit/s, a slow uplink; a faster deadline would cut off legitimate large uploads.
DEFAULT_BODY_TIMEOUT_SECONDS = 300.0
# uvicorn's default. Behind a load balancer, set it above the balancer's idle timeout
# (AWS ALB: 60 s), or the balancer may reuse a connection ferry is closing.
DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS = 5.0
# A refused connection is read (and the bytes dropped) this long after the refusal, or
# until this much more arrived, so the client reads the answer instead of a reset from
# unread request bytes (nginx's lingering close, bounded in time and bytes).
REFUSAL_LINGER_SECONDS = 1.0
REFUSAL_LINGER_BYTES = 256 * 1024
# At most this many refused connections linger at once (the rest close at once); they
# come out of the file-descriptor reserve below.
MAX_LINGERING_REFUSALS = 32

# gRPC. nginx allows 128 concurrent HTTP/2 streams per connection (gRPC's own default is
# unlimited); clients queue streams beyond the limit, so it costs them nothing.
DEFAULT_GRPC_MAX_CONCURRENT_STREAMS = 128
# In-flight RPCs over all connections; beyond it grpc answers RESOURCE_EXHAUSTED. Each
# holds its request message (up to --max_request_bytes) while queued.
DEFAULT_GRPC_MAX_CONCURRENT_RPCS = 1024
# gRPC's own hard limit is 16 KiB with a soft limit of 8 KiB above which it drops
# requests at random; ferry sets both to one value, so the refusal is deterministic.
DEFAULT_GRPC_MAX_METADATA_BYTES = 16 * 1024
# A gRPC connection with no RPC for this long gets GOAWAY (clients reconnect on their own):
# otherwise idle connections hold file descriptors for ever.
DEFAULT_GRPC_MAX_CONNECTION_IDLE_SECONDS = 300.0

# File descriptors kept out of the connection budget: ferry uses ~26 serving one model
# (logs, onnxruntime's cache, grpc's and uvloop's epoll, eventfds and pipes), more while
# versions load or download from S3, plus the lingering refusals: at least 128, or 1/10.
FD_RESERVE_MIN = 128
FD_RESERVE_SHARE = 10
# Even with a million descriptors, an unbounded number of connections is unbounded memory
# (a connection costs ferry ~10 KiB idle, a request body up to --max_request_bytes).
MAX_AUTO_HTTP_CONNECTIONS = 10_000
MAX_AUTO_GRPC_CONNECTIONS = 1_000
# HTTP clients open a connection per concurrent request, gRPC clients multiplex: gRPC
# gets an eighth of the budget.
GRPC_SHARE = 8
# What an unlimited RLIMIT_NOFILE counts as (Linux's default fs.nr_open).
UNLIMITED_FILES = 1 << 20


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP connection may send and how long it may take; `max_connections` 0
    means: derive it from the open-file limit (`resolve_connection_limits`)."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    keep_alive_timeout_seconds: float = DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS
    max_connections: int = 0


@dataclass(frozen=True)
class GrpcLimits:
    """The gRPC server's connection and stream limits; `max_connections` 0: derived."""

    max_concurrent_streams: int = DEFAULT_GRPC_MAX_CONCURRENT_STREAMS
    max_concurrent_rpcs: int = DEFAULT_GRPC_MAX_CONCURRENT_RPCS
    max_metadata_bytes: int = DEFAULT_GRPC_MAX_METADATA_BYTES
    max_connection_idle_seconds: float = DEFAULT_GRPC_MAX_CONNECTION_IDLE_SECONDS
    max_connections: int = 0

    def server_options(self, max_receive_bytes: int) -> list[tuple[str, int]]:
        """grpc channel arguments for these limits (plus the message size limit)."""
        options = [
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
        ]
        if self.max_connection_idle_seconds > 0:
            idle_ms = int(self.max_connection_idle_seconds * 1000)
            options.append(("grpc.max_connection_idle_ms", idle_ms))
        if self.max_connections > 0:
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        return options


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (many systems start processes at
    1024 although the hard limit is far higher) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED_FILES
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-file limit raised from %d to %d (the hard limit)", soft, target)
        return target
    effective = soft if soft != resource.RLIM_INFINITY else UNLIMITED_FILES
    log.info("open-file limit: %d", effective)
    return effective


def connection_budget(open_files: int) -> int:
    """File descriptors left for client connections after the reserve."""
    reserve = max(FD_RESERVE_MIN, open_files // FD_RESERVE_SHARE)
    return max(open_files - reserve, 2)


def resolve_connection_limits(
    http: HttpLimits, grpc: GrpcLimits, open_files: int
) -> tuple[HttpLimits, GrpcLimits]:
    """The limits with `max_connections` 0 replaced by a share of the file-descriptor
    budget, so HTTP and gRPC together stay under the open-file limit; an explicit value
    over the budget is kept (the operator's call) with a warning."""
    budget = connection_budget(open_files)
    grpc_default = max(1, min(MAX_AUTO_GRPC_CONNECTIONS, budget // GRPC_SHARE))
    grpc_connections = grpc.max_connections or grpc_default
    http_default = max(1, min(MAX_AUTO_HTTP_CONNECTIONS, budget - grpc_connections))
    http_connections = http.max_connections or http_default
    if http_connections + grpc_connections > budget:
        log.warning(
            "--max_connections %d plus --grpc_max_connections %d exceed the %d file "
            "descriptors left for connections (open-file limit %d): raise the limit "
            "(ulimit -n) or lower them",
            http_connections,
            grpc_connections,
            budget,
            open_files,
        )
    log.info(
        "connection limits: HTTP %d, gRPC %d (open-file limit %d)",
        http_connections,
        grpc_connections,
        open_files,
    )
    return (
        replace(http, max_connections=http_connections),
        replace(grpc, max_connections=grpc_connections),
    )
