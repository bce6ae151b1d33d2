"""`ferry serve --sagemaker` flags for `code/requirements.txt` and multi-model endpoints.

They live beside the subsystems they configure rather than in `cli.py`: the values are
recorded in the click context (not parameters of `serve`) and `resolve` turns them,
with the container's environment, into the settings of
`ferry.protocols.sagemaker_requirements` and `ferry.protocols.sagemaker_mme`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from ferry.flag_groups import BOOL_FLAG, FlagGroup, FlagSpec
from ferry.protocols.sagemaker_handlers import RequirementsOptions
from ferry.protocols.sagemaker_mme import MULTI_MODEL_ENV, MultiModelOptions, multi_model_enabled
from ferry.protocols.sagemaker_requirements import (
    DEFAULT_TIMEOUT_SECONDS,
    REQUIREMENTS_ENV,
    REQUIREMENTS_FLAG,
    TIMEOUT_FLAG,
)
from ferry.repository.location import BasePath, ObjectStoreOptions, parse_base_path
from ferry.repository.mme_cache import MAX_BYTES_FLAG, MAX_MODELS_FLAG, CacheLimits
from ferry.repository.sagemaker_catalog import DEFAULT_MULTI_MODEL_DIR

# Without --max_loaded_models_bytes, loaded models' files may take this share of memory.
AUTO_MEMORY_SHARE = 0.5


_OPTIONS: list[FlagSpec] = [
    (
        REQUIREMENTS_FLAG,
        {
            **BOOL_FLAG,
            "default": False,
            "help": "Install code/requirements.txt at start-up (pip runs the packages' "
            f"code); with --sagemaker also ${REQUIREMENTS_ENV}=true.",
        },
    ),
    (
        TIMEOUT_FLAG,
        {
            "type": click.FloatRange(min=1),
            "default": DEFAULT_TIMEOUT_SECONDS,
            "show_default": True,
            "help": "How long pip may take for code/requirements.txt; past it, start-up fails.",
        },
    ),
    (
        "--multi_model",
        {
            **BOOL_FLAG,
            "default": None,
            "help": "A SageMaker multi-model endpoint (with --sagemaker; default: "
            f"${MULTI_MODEL_ENV}): the MME API, TargetModel, models loaded on demand.",
        },
    ),
    (
        "--sagemaker_multi_model_dir",
        {
            "type": click.Path(file_okay=False, path_type=Path),
            "default": DEFAULT_MULTI_MODEL_DIR,
            "show_default": True,
            "help": "Where a multi-model endpoint's models (and code/) are.",
        },
    ),
    (
        "--sagemaker_model_data_url",
        {
            "default": None,
            "metavar": "s3://BUCKET/PREFIX|PATH",
            "help": "Where TargetModel paths are found on a multi-model endpoint "
            "(SageMaker's ModelDataUrl); archives are fetched on first use.",
        },
    ),
    (
        MAX_MODELS_FLAG,
        {
            "type": click.IntRange(min=0),
            "default": 0,
            "show_default": True,
            "help": "Models a multi-model endpoint keeps loaded (0: no count limit); "
            "beyond, the least recently used idle one is unloaded.",
        },
    ),
    (
        MAX_BYTES_FLAG,
        {
            "type": click.IntRange(min=0),
            "default": 0,
            "help": "Bytes of model files a multi-model endpoint keeps loaded "
            "(0: half the machine's memory); beyond, least recently used idle models "
            "are unloaded.",
        },
    ),
]


_GROUP = FlagGroup("ferry.sagemaker_flags", _OPTIONS)
# Adds the flags above to a click command, recorded for `resolve`.
sagemaker_flag_options = _GROUP.add_to


@dataclass(frozen=True)
class SageMakerExtras:
    requirements: RequirementsOptions
    multi_model: MultiModelOptions | None


def resolve(
    ctx: click.Context,
    sagemaker: bool,
    object_store: ObjectStoreOptions,
    model_roots: tuple[BasePath, ...],
) -> SageMakerExtras:
    """The flags' settings; `sagemaker` adds the container's environment (the operator
    there). Raises click.UsageError for a bad value."""
    given = _GROUP.given(ctx)
    allow = bool(given.get("allow_requirements"))
    if sagemaker and os.environ.get(REQUIREMENTS_ENV, "").strip().lower() == "true":
        allow = True
    requirements = RequirementsOptions(
        allowed=allow,
        cache_dir=object_store.resolved_cache_dir(),
        timeout_seconds=float(
            given.get("sagemaker_requirements_timeout_seconds") or DEFAULT_TIMEOUT_SECONDS
        ),
    )
    multi = given.get("multi_model")
    if multi is None and sagemaker:
        try:
            multi = multi_model_enabled(os.environ.get(MULTI_MODEL_ENV, ""))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if not multi:
        return SageMakerExtras(requirements, None)
    if not sagemaker:
        raise click.UsageError("--multi_model needs --sagemaker")
    data_url = given.get("sagemaker_model_data_url")
    try:
        parsed = parse_base_path(data_url) if data_url else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sagemaker_model_data_url") from None
    if isinstance(parsed, Path):
        parsed = parsed.resolve()
    max_bytes = int(given.get("max_loaded_models_bytes") or 0) or _auto_memory_budget()
    options = MultiModelOptions(
        model_dir=Path(given.get("sagemaker_multi_model_dir") or DEFAULT_MULTI_MODEL_DIR).resolve(),
        model_data_url=parsed,
        limits=CacheLimits(int(given.get("max_loaded_models") or 0), max_bytes),
        extra_roots=model_roots,
    )
    return SageMakerExtras(requirements, options)


def _auto_memory_budget() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: no byte limit (the count limit still applies)
    return int(total * AUTO_MEMORY_SHARE)
