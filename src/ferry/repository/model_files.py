"""The files of a model folder that belong to the model rather than to one version
(beside the numbered version folders): what S3 sources download with every version and
what `ferry package` packs with the versions. One list, so the two agree."""

from __future__ import annotations

from ferry.model_config import BATCHING_FILE_NAME
from ferry.model_options import OPTIONS_FILE
from ferry.triton_config import CONFIG_FILE

MODEL_LEVEL_FILES = (BATCHING_FILE_NAME, OPTIONS_FILE, CONFIG_FILE)
# Triton's label files (config.pbtxt's label_filename) lie beside config.pbtxt under any
# name; top-level text files count as model-level files.
LABEL_FILE_SUFFIX = ".txt"


def is_model_level_file(name: str) -> bool:
    """Whether a top-level file of a model folder is read when its versions load."""
    return name in MODEL_LEVEL_FILES or (
        name.endswith(LABEL_FILE_SUFFIX) and not name.startswith(".")
    )
