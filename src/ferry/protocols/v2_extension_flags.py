"""The `ferry serve` flags of Triton's shared memory and streaming extensions.

They live with the extensions, not in `ferry.cli`: `v2_extension_flag_options` adds
them to the command without making them parameters of it, and `resolve` reads them
back as one `V2ExtensionOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from ferry.flag_groups import FlagGroup, FlagSpec
from ferry.protocols.shared_memory import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_REGIONS,
    ClientAccess,
    SharedMemoryOptions,
)
from ferry.protocols.v2_stream import DEFAULT_MAX_IN_FLIGHT


@dataclass(frozen=True)
class V2ExtensionOptions:
    """Shared memory settings and the per-stream bound of ModelStreamInfer."""

    shared_memory: SharedMemoryOptions = field(default_factory=SharedMemoryOptions)
    max_in_flight_per_stream: int = DEFAULT_MAX_IN_FLIGHT


_OPTIONS: list[FlagSpec] = [
    (
        # Triton's spelling, --allow-client-shm, is the hidden twin (ferry.cli_spelling).
        ("--allow_client_shm",),
        {
            "type": click.Choice([access.value for access in ClientAccess]),
            "default": ClientAccess.NONE.value,
            "show_default": True,
            "help": "Which clients may register and use system shared memory regions: "
            "false (none, Triton's default), loopback (clients on 127.0.0.0/8, ::1 or the "
            "gRPC UNIX socket) or true (any client); docs/shared_memory.md.",
        },
    ),
    (
        ("--max_shm_regions",),
        {
            "type": click.IntRange(min=0),
            "default": DEFAULT_MAX_REGIONS,
            "show_default": True,
            "help": "Registered shared memory regions at most (each holds a file descriptor).",
        },
    ),
    (
        ("--max_shm_bytes",),
        {
            "type": click.IntRange(min=0),
            "default": DEFAULT_MAX_BYTES,
            "show_default": True,
            "help": "Bytes of all registered shared memory regions together, at most.",
        },
    ),
    (
        ("--grpc_max_in_flight_per_stream",),
        {
            "type": click.IntRange(min=1),
            "default": DEFAULT_MAX_IN_FLIGHT,
            "show_default": True,
            "help": "ModelStreamInfer requests of one stream read and not yet answered; at "
            "the bound ferry stops reading the stream until an answer is sent.",
        },
    ),
]


_GROUP = FlagGroup("ferry.v2_extension_flags", _OPTIONS)
# Adds the flags to a click command (their values go to the context, for `resolve`).
v2_extension_flag_options = _GROUP.add_to


def resolve(ctx: click.Context) -> V2ExtensionOptions:
    """The options the command line gave (defaults for those it did not)."""
    given = _GROUP.given(ctx)
    return V2ExtensionOptions(
        shared_memory=SharedMemoryOptions(
            allow_client_shm=ClientAccess(given.get("allow_client_shm", ClientAccess.NONE.value)),
            max_regions=given.get("max_shm_regions", DEFAULT_MAX_REGIONS),
            max_bytes=given.get("max_shm_bytes", DEFAULT_MAX_BYTES),
        ),
        max_in_flight_per_stream=given.get("grpc_max_in_flight_per_stream", DEFAULT_MAX_IN_FLIGHT),
    )
