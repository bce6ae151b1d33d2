"""The `ferry serve` flags of compressed V2 inference answers (ferry.protocols.
response_encoding), read back as one `ResponseCompression`."""

from __future__ import annotations

import click

from ferry.flag_groups import BOOL_FLAG, FlagGroup, FlagSpec
from ferry.protocols.response_encoding import ResponseCompression

# The defaults, from the one place that holds them.
_DEFAULT = ResponseCompression()

_OPTIONS: list[FlagSpec] = [
    (
        "--http_response_compression",
        {
            **BOOL_FLAG,
            "default": _DEFAULT.enabled,
            "show_default": True,
            "help": "Compress a V2 inference answer (POST /v2/models/.../infer) with gzip or "
            "deflate when the request's Accept-Encoding asks for it, as Triton does "
            "(tritonclient's response_compression_algorithm). TF Serving's and "
            "SageMaker's APIs never compress, as theirs do not.",
        },
    ),
    (
        "--http_response_compression_min_bytes",
        {
            "type": click.IntRange(min=0),
            "default": _DEFAULT.min_bytes,
            "show_default": True,
            "help": "Smaller answers are sent as they are: they fit one TCP segment either "
            "way (0: compress every non-empty answer, as Triton).",
        },
    ),
    (
        "--http_response_compression_level",
        {
            "type": click.IntRange(min=1, max=9),
            "default": _DEFAULT.level,
            "show_default": True,
            "help": "zlib level of compressed answers: 1 is the fastest (Triton's is 6, "
            "about 5x the CPU for a JSON answer 7% smaller).",
        },
    ),
]

_GROUP = FlagGroup("ferry.response_encoding_flags", _OPTIONS)
# Adds the flags to a click command (their values go to the context, for `resolve`).
response_compression_flag_options = _GROUP.add_to


def resolve(ctx: click.Context) -> ResponseCompression:
    """The settings the command line gave (defaults for those it did not)."""
    given = _GROUP.given(ctx)
    return ResponseCompression(
        enabled=given.get("http_response_compression", _DEFAULT.enabled),
        min_bytes=given.get("http_response_compression_min_bytes", _DEFAULT.min_bytes),
        level=given.get("http_response_compression_level", _DEFAULT.level),
    )
