"""Where a version's conversions are kept (the ONNX export of `accelerate = "onnx"`, the
precision variants and TensorRT engines): beside the model when ferry may write there,
else under ferry's cache folder.

SageMaker mounts /opt/ml/model read-only, and a shared model folder may be too, so
writing next to the model cannot be assumed: a read-only version folder gets its
conversions under `<cache>/converted/<digest of the folder's path>/` instead
(`--model_cache_dir`'s default folder, ferry's folder in the user cache folder).
Conversions already beside the model are used wherever ferry writes new ones.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ferry.repository.location import default_cache_dir
from ferry.repository.source import CACHE_DIR_NAME


def conversion_dir(version_dir: Path, file_name: str = "") -> Path:
    """The folder for `version_dir`'s conversions: `version_dir/.ferry` when it exists
    and holds `file_name`, or when the version folder is writable; else a folder of its
    own under ferry's cache folder (created on first write by the caller)."""
    beside = version_dir / CACHE_DIR_NAME
    if file_name and (beside / file_name).exists():
        return beside
    if os.access(beside if beside.is_dir() else version_dir, os.W_OK):
        return beside
    digest = hashlib.sha256(str(version_dir.resolve()).encode()).hexdigest()[:32]
    return default_cache_dir() / "converted" / digest
