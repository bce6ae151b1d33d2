"""Where and how the gRPC server listens: its addresses (`--port`, TF Serving's
`--grpc_socket_path`), its server arguments (ferry's limits, then TF Serving's
`--grpc_channel_arguments`) and its TLS credentials (`--ssl_config_file`)."""

from __future__ import annotations

import logging

import grpc

from ferry.tfserving_flags import GrpcTls

log = logging.getLogger(__name__)


def grpc_addresses(host: str, port: int, socket_path: str) -> list[str]:
    """Where gRPC listens: `--port` (0: not on TCP) and `--grpc_socket_path`."""
    addresses = []
    if port > 0:
        addresses.append(f"{host}:{port}")
    if socket_path:
        addresses.append(f"unix:{socket_path}")
    return addresses


def grpc_server_arguments(
    limit_arguments: list[tuple[str, int]], channel_arguments: tuple[tuple[str, int | str], ...]
) -> list[tuple[str, int | str]]:
    """ferry's gRPC server arguments with `--grpc_channel_arguments` applied on top, each
    key once. A key that a ferry limit flag sets keeps the flag's value (a warning says
    which flag to use), so a launch command cannot lift a limit by accident."""
    owned = dict(limit_arguments)
    merged: dict[str, int | str] = {**owned, "grpc.so_reuseport": 0}
    for key, value in channel_arguments:
        if key in owned or key in GRPC_LIMIT_FLAGS:
            log.warning(
                "--grpc_channel_arguments: %s=%s ignored: %s",
                key,
                value,
                GRPC_LIMIT_FLAGS.get(key, "a ferry limit flag sets it"),
            )
            continue
        merged[key] = value
    return list(merged.items())


# The `ferry serve` flag behind each gRPC argument ferry sets (ferry.transport_limits).
GRPC_LIMIT_FLAGS = {
    "grpc.max_receive_message_length": "set by --max_request_bytes",
    "grpc.max_send_message_length": "ferry sends answers of any size",
    "grpc.max_concurrent_streams": "set by --grpc_max_concurrent_streams",
    "grpc.max_metadata_size": "set by --grpc_max_metadata_bytes",
    "grpc.absolute_max_metadata_size": "set by --grpc_max_metadata_bytes",
    "grpc.max_connection_idle_ms": "set by --grpc_max_connection_idle_seconds",
    "grpc.max_allowed_incoming_connections": "set by --grpc_max_connections",
}


def grpc_tls_credentials(tls: GrpcTls) -> grpc.ServerCredentials:
    """`--ssl_config_file`'s credentials, as TF Serving builds them: the key pair, and
    with `client_verify` a client certificate signed by `custom_ca` is required."""
    return grpc.ssl_server_credentials(
        [(tls.server_key.encode(), tls.server_cert.encode())],
        root_certificates=tls.custom_ca.encode() if tls.custom_ca else None,
        require_client_auth=tls.client_verify,
    )
