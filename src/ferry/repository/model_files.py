"""The files of a model folder that belong to the model rather than to one version
(beside the numbered version folders): what S3 sources fetch with the versions and
what `ferry package` packs with the versions. One list, so the two agree."""

from __future__ import annotations

from ferry.model_config import BATCHING_FILE_NAME
from ferry.model_options import OPTIONS_FILE
from ferry.repository.label_file import VERSION_LABELS_FILE
from ferry.triton_config import CONFIG_FILE

# Read when a version loads (S3 sources copy them into the local cache).
MODEL_LEVEL_FILES = (BATCHING_FILE_NAME, OPTIONS_FILE, CONFIG_FILE)
# Read by the watcher on every poll, straight from storage and bounded (label_file.py).
POLLED_MODEL_FILES = (VERSION_LABELS_FILE,)
# Triton's label files (config.pbtxt's label_filename) lie beside config.pbtxt under any
# name; top-level text files count as model-level files.
LABEL_FILE_SUFFIX = ".txt"


def is_model_level_file(name: str) -> bool:
    """Whether a top-level file of a model folder belongs to the model: read when its
    versions load, or on every poll."""
    return (
        name in MODEL_LEVEL_FILES
        or name in POLLED_MODEL_FILES
        or (name.endswith(LABEL_FILE_SUFFIX) and not name.startswith("."))
    )
