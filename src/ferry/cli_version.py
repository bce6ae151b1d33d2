"""`ferry version` and `ferry --version`: ferry's version and the frameworks it found.

A bug report needs both: which ferry, and which TensorFlow, onnxruntime or PyTorch it
loads models with. Versions come from the installed distributions' metadata, so
nothing is imported (TensorFlow alone would take seconds)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from ferry.distribution import DISTRIBUTION, installed_version

# Distributions that decide how models load and are served, in the order shown.
FRAMEWORKS = (
    "numpy",
    "onnxruntime",
    "onnx",
    "tensorflow",
    "keras",
    "tf2onnx",
    "ai-edge-litert",
    "torch",
    "scikit-learn",
    "skl2onnx",
    "boto3",
    "grpcio",
    "protobuf",
    "uvicorn",
)


def _found(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def version_lines() -> list[str]:
    """`ferry X (ferry-serve)`, Python, then one `name version` line per framework found."""
    lines = [f"ferry {installed_version()} ({DISTRIBUTION})", f"Python {platform.python_version()}"]
    for name in FRAMEWORKS:
        found = _found(name)
        if found is not None:
            lines.append(f"{name} {found}")
    return lines
