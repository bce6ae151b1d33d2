"""How `ferry serve` splits the open-file limit between HTTP and gRPC connections."""

from __future__ import annotations

import pytest

from ferry.transport_limits import (
    FD_RESERVE_MIN,
    MAX_AUTO_GRPC_CONNECTIONS,
    MAX_AUTO_HTTP_CONNECTIONS,
    GrpcLimits,
    HttpLimits,
    connection_budget,
    resolve_connection_limits,
)


@pytest.mark.parametrize("open_files", [256, 1024, 4096, 65_536, 1 << 20])
def test_the_automatic_limits_leave_the_reserve_free(open_files: int) -> None:
    http, grpc = resolve_connection_limits(HttpLimits(), GrpcLimits(), open_files)

    used = http.max_connections + grpc.max_connections
    assert used <= connection_budget(open_files) <= open_files - FD_RESERVE_MIN
    assert 0 < grpc.max_connections <= MAX_AUTO_GRPC_CONNECTIONS
    assert grpc.max_connections < http.max_connections <= MAX_AUTO_HTTP_CONNECTIONS


def test_a_1024_file_limit_still_serves_hundreds_of_http_connections() -> None:
    http, grpc = resolve_connection_limits(HttpLimits(), GrpcLimits(), 1024)

    assert (http.max_connections, grpc.max_connections) == (784, 112)


def test_explicit_limits_are_kept_even_over_the_budget(caplog) -> None:
    http, grpc = resolve_connection_limits(
        HttpLimits(max_connections=5000), GrpcLimits(max_connections=50), 1024
    )

    assert (http.max_connections, grpc.max_connections) == (5000, 50)
    assert "exceed the 896 file descriptors" in caplog.text


def test_grpc_options_carry_every_limit() -> None:
    options = dict(
        GrpcLimits(
            max_concurrent_streams=7,
            max_metadata_bytes=2048,
            max_connection_idle_seconds=1.5,
            max_connections=9,
        ).server_options(max_receive_bytes=1000)
    )

    assert options["grpc.max_receive_message_length"] == 1000
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == 2048
    assert options["grpc.max_connection_idle_ms"] == 1500
    assert options["grpc.max_allowed_incoming_connections"] == 9
