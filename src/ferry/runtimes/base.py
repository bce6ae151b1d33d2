"""The interface every model runtime implements.

A runtime is cheap to construct and does its expensive work in `load`. After a
successful load it describes its signatures and runs a dict of numpy arrays. The
batcher calls `run` from its worker threads, so implementations must allow
concurrent `run` calls (or serialise internally); `unload` is called once, after
the last `run` has returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferry.consent import ModelConsent
from ferry.model_options import ModelOptions
from ferry.tensors import Signature


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings that apply to every model a runtime loads.

    `intra_op_threads` / `inter_op_threads`: 0 lets the runtime choose (all cores).
    `allow_spinning`: whether idle runtime threads spin-wait for work; spinning lowers
    latency a little but burns CPU that the HTTP layer and other models need.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False
    # TF Serving's `--saved_model_tags`: the SavedModel meta graph to load.
    saved_model_tags: tuple[str, ...] = ("serve",)
    # TF Serving's `--prefer_tflite_model`: a folder's model.tflite over its saved_model.pb.
    prefer_tflite_model: bool = False


class Runtime(ABC):
    """One loaded model version."""

    #: Short name of the model format, as reported in logs and status.
    format_name: str = ""
    #: `model_platform` values (lower case) in a model config that select this runtime.
    platforms: tuple[str, ...] = ()

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        self.version_dir = version_dir
        self.options = options
        # The model's `ferry.toml` settings (precision, ...); set by runtime_for.
        self.model_options = ModelOptions()
        # What the operator allows this model to run or unpickle; set by runtime_for.
        # The default allows nothing, so a runtime built any other way stays safe.
        self.consent = ModelConsent()

    @classmethod
    @abstractmethod
    def can_load(cls, version_dir: Path) -> bool:
        """True when `version_dir` holds a model of this format (a cheap file check)."""

    @abstractmethod
    def load(self) -> None:
        """Load the model; raise an exception naming the problem if it cannot be loaded."""

    @property
    @abstractmethod
    def signatures(self) -> dict[str, Signature]:
        """Signatures by name; the default one is called `serving_default`."""

    @abstractmethod
    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (possibly batched) request; inputs are already checked against the signature."""

    def export_onnx(self, path: Path) -> None:
        """Write an ONNX model equivalent to the `serving_default` signature, with the same
        input and output names (for `accelerate = "onnx"`). Raise when the format cannot."""
        raise NotImplementedError(f"{self.format_name} models cannot be exported to ONNX")

    def unload(self) -> None:  # noqa: B027 - optional hook, most runtimes just drop references
        """Release the model's resources."""


def model_file_in(version_dir: Path, preferred: str, pattern: str) -> Path | None:
    """`preferred` in `version_dir` if present, else the only file matching `pattern`
    (None when there is none, or several to choose from)."""
    path = version_dir / preferred
    if path.is_file():
        return path
    candidates = sorted(version_dir.glob(pattern))
    return candidates[0] if len(candidates) == 1 else None
