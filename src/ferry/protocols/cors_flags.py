"""The `ferry serve` flags of ferry's CORS policy (`--cors_origins`,
`--cors_allow_credentials`, `--cors_max_age_seconds`), and how they meet TF Serving's
`--rest_api_enable_cors_support`.

They live with CORS, not in `ferry.cli`: `cors_flag_options` adds them to the command
without making them parameters of it, and `resolve` reads them back as one `CorsPolicy`.

With both `--cors_origins` and TF Serving's flag, `--cors_origins` decides: TF Serving's
flag opens CORS to every origin, and an operator who adds a list means to narrow it
(a warning says so). TF Serving's flag alone keeps TF Serving's behaviour exactly.
"""

from __future__ import annotations

import logging

import click

from ferry.flag_groups import BOOL_FLAG, FlagGroup, FlagSpec
from ferry.protocols.cors import DEFAULT_MAX_AGE_SECONDS, CorsPolicy, normalize_origin

log = logging.getLogger(__name__)
ORIGINS_FLAG = "--cors_origins"
# Firefox's cap on Access-Control-Max-Age (Chromium's is 2 hours).
MAX_AGE_CAP_SECONDS = 86_400

_OPTIONS: list[FlagSpec] = [
    (
        (ORIGINS_FLAG,),
        {
            "multiple": True,
            "metavar": "ORIGIN[,ORIGIN...]",
            "help": "Web origins (scheme://host[:port]) whose pages may call the REST APIs "
            "(CORS), or '*' for any; repeatable. Preflights are answered by it; with "
            "--rest_api_enable_cors_support it narrows that flag's allow-all.",
        },
    ),
    (
        ("--cors_allow_credentials",),
        {
            **BOOL_FLAG,
            "default": False,
            "show_default": True,
            "help": "Let pages of origins listed by name send credentials (cookies, "
            "client certificates, fetch's credentials: 'include'); never for '*'.",
        },
    ),
    (
        ("--cors_max_age_seconds",),
        {
            "type": click.IntRange(min=0, max=MAX_AGE_CAP_SECONDS),
            "default": DEFAULT_MAX_AGE_SECONDS,
            "show_default": True,
            "help": "How long browsers may cache a preflight's answer.",
        },
    ),
]


_GROUP = FlagGroup("ferry.cors_flags", _OPTIONS)
# Adds the flags to a click command (their values go to the context, for `resolve`).
cors_flag_options = _GROUP.add_to


def parse_origins(values: tuple[str, ...] | list[str]) -> frozenset[str]:
    """`--cors_origins` values (each comma-separated), normalized; ValueError on a bad one."""
    origins = [item for value in values for item in value.split(",") if item.strip()]
    return frozenset(normalize_origin(item) for item in origins)


def resolve(ctx: click.Context, tf_serving_cors: bool = False) -> CorsPolicy | None:
    """The policy the command line gave (None: no `--cors_origins`; TF Serving's flag,
    if given, then applies alone)."""
    given = _GROUP.given(ctx)
    credentials = bool(given.get("cors_allow_credentials", False))
    try:
        origins = parse_origins(given.get("cors_origins") or ())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=ORIGINS_FLAG) from None
    if not origins:
        if credentials:
            raise click.UsageError("--cors_allow_credentials needs --cors_origins")
        return None
    policy = CorsPolicy(
        origins, credentials, given.get("cors_max_age_seconds", DEFAULT_MAX_AGE_SECONDS)
    )
    if credentials and not policy.named_origins:
        raise click.UsageError(
            "--cors_allow_credentials: browsers refuse credentials with '*', so they go "
            "only to origins listed by name; list them in --cors_origins"
        )
    if tf_serving_cors:
        log.warning(
            "--rest_api_enable_cors_support with --cors_origins: only %s get CORS headers",
            ", ".join(sorted(origins)),
        )
    return policy
