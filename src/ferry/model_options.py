"""Per-model settings: `ferry.toml` in a model's folder, overridden by one in a version folder.

TF Serving's config formats have no place for what ferry adds per model (serving through
ONNX, a lower precision), so ferry reads a small TOML file:

    # models/resnet/ferry.toml
    accelerate = "onnx"       # serve through onnxruntime when the export matches
    precision = "fp16"        # build and serve a lower-precision variant
    batch_dimension = "none"  # never stack requests for this model

Unknown keys are errors, so a typo never silently does nothing.

`allow_code` and `allow_pickle` are still accepted (so existing folders load) but grant
nothing: consent to run code or unpickle is the operator's (`ferry serve --allow_code`,
`--allow_pickle`; see `ferry.consent`), never a folder's, since whoever writes the folder
could grant it to themselves. A folder that sets them gets a warning saying so.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferry.consent import CODE_FLAG, PICKLE_FLAG

log = logging.getLogger(__name__)

OPTIONS_FILE = "ferry.toml"
# Keys that once granted consent from the folder; accepted, ignored, warned about.
_FORMER_CONSENT_KEYS = {"allow_code": CODE_FLAG, "allow_pickle": PICKLE_FLAG}


class ModelOptions(BaseModel):
    """Settings for one model version; the defaults come from `ferry serve`'s flags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "onnx": convert a TensorFlow/Keras/PyTorch model to ONNX at load and serve it through
    # onnxruntime when its outputs match the original within `accelerate_tolerance`.
    accelerate: Literal["", "onnx"] = ""
    accelerate_tolerance: float = Field(default=1e-4, gt=0)
    # A lower-precision variant to build (once, cached beside the version) and serve.
    precision: Literal["", "fp32", "fp16", "int8"] = ""
    # Accepted for existing folders, but they grant nothing: the operator's
    # `ferry serve --allow_pickle` / `--allow_code` do (ferry.consent).
    allow_pickle: bool = False
    allow_code: bool = False
    # "auto": stack requests when every tensor's dimension 0 is dynamic; "dynamic": treat
    # dimension 0 as the batch even where the model declares it fixed (the model says it
    # takes any batch); "none": run every request alone.
    batch_dimension: Literal["auto", "dynamic", "none"] = "auto"


class ModelOptionsError(ValueError):
    """A `ferry.toml` is unreadable or invalid; the message names the file and the field."""


def load_model_options(folders: list[Path], defaults: ModelOptions | None = None) -> ModelOptions:
    """`defaults`, overridden by each folder's `ferry.toml` in order (model, then version)."""
    values = (defaults or ModelOptions()).model_dump()
    for folder in folders:
        path = folder / OPTIONS_FILE
        if not path.is_file():
            continue
        try:
            settings = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ModelOptionsError(f"{path}: {exc}") from None
        _warn_former_consent(path, settings)
        values.update(settings)
        try:
            ModelOptions(**values)
        except ValidationError as exc:
            raise ModelOptionsError(f"{path}: {_describe(exc)}") from None
    return ModelOptions(**values)


def _warn_former_consent(path: Path, settings: dict) -> None:
    for key, flag in _FORMER_CONSENT_KEYS.items():
        if settings.get(key) is True:
            log.warning(
                "%s: `%s = true` no longer allows anything: consent comes from the operator "
                "who starts the server (ferry serve %s MODEL)",
                path,
                key,
                flag,
            )


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
    )
