"""Models in a SageMaker model folder (`/opt/ml/model`), named as the SageMaker
TensorFlow Serving container names them.

SageMaker extracts `model.tar.gz` into the folder; the container then treats every
folder that holds integer version folders as one model, named after that folder:

  <dir>/<version>/...               one model, named `model` (the basename of
                                    /opt/ml/model; ferry uses `model` wherever <dir> is)
  <dir>/export/Servo/<version>/...  one model, `Servo` (TF Estimator export layout)
  <dir>/<name>/<version>/...        one model per <name>

Folders are searched at any depth (symlinks followed, each folder once), except
inside version folders and hidden (`.x`) or `_x` folders. Every version found is
served (the container lists them all in a `specific` version policy); a request
without a version gets the newest.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferry.model_config import ConfigError, ModelSpec
from ferry.repository.catalog import ModelCatalog
from ferry.repository.policy import AllVersions

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
# Where SageMaker puts the models of a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true).
DEFAULT_MULTI_MODEL_DIR = Path("/opt/ml/models")
# The container's switch for multi-model mode ("true" / "false").
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
# The name of a model whose version folders sit directly in the model folder.
TOP_LEVEL_MODEL_NAME = "model"


def _is_version_folder(entry: os.DirEntry) -> bool:
    return entry.name.isascii() and entry.name.isdigit() and entry.is_dir()


def models_in_sagemaker_dir(model_dir: Path) -> list[ModelSpec]:
    """Every model under `model_dir`, in path order; ConfigError when the folder is
    missing or two folders give the same model name (the container cannot serve
    that either)."""
    if not model_dir.is_dir():
        raise ConfigError(f"SageMaker model folder {model_dir} is not a directory")
    specs: list[ModelSpec] = []
    pending = [model_dir]
    visited: set[str] = set()
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in visited:  # a symlink back up the tree (or to a folder already seen)
            continue
        visited.add(real)
        with os.scandir(folder) as entries:
            children = sorted(
                (e for e in entries if e.is_dir() and not e.name.startswith((".", "_"))),
                key=lambda e: e.name,
            )
        if any(_is_version_folder(e) for e in children):
            name = TOP_LEVEL_MODEL_NAME if folder == model_dir else folder.name
            specs.append(ModelSpec(name=name, base_path=folder, policy=AllVersions()))
        # Depth-first in name order, so the result is in path order.
        pending.extend(Path(e.path) for e in reversed(children) if not _is_version_folder(e))
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(
                f"SageMaker model folder {model_dir}: two models are named {spec.name!r} "
                f"({seen[spec.name]} and {spec.base_path}); rename one folder"
            )
        seen[spec.name] = spec.base_path
    return specs


def single_model_folder(folder: Path) -> Path | None:
    """The folder holding one model's version folders: `folder` itself when its version
    folders sit directly in it (the layout a multi-model endpoint's `url` has), else the
    one model found under it by the rules above (an archive's `NAME/VERSION/...` or
    `export/Servo/VERSION/...`); None when there is no model, or more than one."""
    if not folder.is_dir():
        return None
    with os.scandir(folder) as entries:
        if any(_is_version_folder(e) for e in entries):
            return folder
    try:
        found = models_in_sagemaker_dir(folder)
    except ConfigError:
        return None
    return found[0].base_path if len(found) == 1 else None  # type: ignore[return-value]


class SageMakerModelDirCatalog(ModelCatalog):
    """The models of a SageMaker model folder, found again on every poll.

    A failure on a later poll (folder gone, a duplicate name) propagates; the watcher
    logs it and keeps the models it serves.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def current(self) -> list[ModelSpec]:
        return models_in_sagemaker_dir(self.model_dir)

    def roots(self) -> tuple[Path, ...]:
        return (self.model_dir,)
