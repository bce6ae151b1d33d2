"""The `ferry serve` flags of logs and traces: --log_format, --access_log, --otlp_endpoint.

They live here, not in `ferry.cli`: `observability_flag_options` adds them to the command
without making them parameters of it, and `observability_options` reads them back as one
`ObservabilityOptions` (docs/observability.md describes what each one writes).
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from ferry.distribution import install_hint
from ferry.flag_groups import BOOL_FLAG, FlagGroup, FlagSpec
from ferry.logging_setup import LOG_FORMATS
from ferry.tracing import OTEL_EXTRA_HINT, OTLP_ENDPOINT_ENV, endpoint_from, otel_installed


@dataclass(frozen=True)
class ObservabilityOptions:
    """How requests are logged and traced (all off or plain by default)."""

    log_format: str = "text"
    access_log: bool = False
    otlp_endpoint: str | None = None  # None: no traces, OpenTelemetry not even imported


_OPTIONS: list[FlagSpec] = [
    (
        ("--log_format",),
        {
            "type": click.Choice(list(LOG_FORMATS)),
            "default": "text",
            "show_default": True,
            "help": "text: one readable line per record; json: one JSON object per line "
            "(time, level, logger, message, request_id, and the access log's fields).",
        },
    ),
    (
        ("--access_log",),
        {
            **BOOL_FLAG,
            "default": False,
            "show_default": True,
            "help": "Log one line per HTTP request (method, path, status, duration, bytes, "
            "request id) on the ferry.access logger. Costs CPU per request.",
        },
    ),
    (
        ("--otlp_endpoint",),
        {
            "default": None,
            "metavar": "URL",
            "help": "Export OpenTelemetry traces (spans decode, queue, batch, run) over "
            f"OTLP/HTTP to URL/v1/traces (default: ${OTLP_ENDPOINT_ENV}; unset: no traces). "
            f"Needs {install_hint('otel')}.",
        },
    ),
]


_GROUP = FlagGroup("ferry.observability_flags", _OPTIONS)
# Adds the flags to a click command (values go to the context, for `observability_options`).
observability_flag_options = _GROUP.add_to


def observability_options(ctx: click.Context) -> ObservabilityOptions:
    """The options the command line (and $OTEL_EXPORTER_OTLP_ENDPOINT) gave; a usage error
    when traces are asked for without the otel extra installed."""
    given = _GROUP.given(ctx)
    endpoint = endpoint_from(given.get("otlp_endpoint"))
    if endpoint is not None and not otel_installed():
        raise click.UsageError(OTEL_EXTRA_HINT)
    return ObservabilityOptions(
        log_format=given.get("log_format", "text"),
        access_log=bool(given.get("access_log", False)),
        otlp_endpoint=endpoint,
    )
