"""Which models exist: a root folder's sub-folders, a fixed list, or a config file.

A catalog answers `current()` on every poll, so models that appear in the root
folder (or in an edited config file) are picked up without a restart.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path

from ferry.model_config import ConfigError, ModelSpec, load_model_config_file, models_under_root
from ferry.repository.layout import LayoutWarnings, root_problem
from ferry.repository.location import BasePath

log = logging.getLogger(__name__)


class ModelCatalog(ABC):
    """The set of configured models. Called from the watcher thread only."""

    @abstractmethod
    def current(self) -> list[ModelSpec]:
        """The models to serve now."""

    def roots(self) -> tuple[BasePath, ...]:
        """Where the operator put models at start-up: what a config reload may use
        unless `--model_roots` says otherwise (ferry.model_control). By default the
        base path of every model now configured."""
        return tuple(spec.base_path for spec in self.current())


class FixedCatalog(ModelCatalog):
    """Models given once at start-up (`--model_name`/`--model_base_path`)."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = specs

    def current(self) -> list[ModelSpec]:
        return self._specs


class RootFolderCatalog(ModelCatalog):
    """Every visible sub-folder of a root is a model (`ferry serve ROOT`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # A root one level too deep serves `variables` or `1` as models: said once.
        self._layout = LayoutWarnings()

    def current(self) -> list[ModelSpec]:
        specs = models_under_root(self.root)
        self._layout.report(f"model root {self.root}", root_problem(self.root))
        return specs

    def roots(self) -> tuple[BasePath, ...]:
        return (self.root,)


class ConfigFileCatalog(ModelCatalog):
    """A TF Serving `--model_config_file`, re-read every `poll_seconds` when it changed.

    A file that fails to parse after start-up is logged and ignored: the previous
    configuration stays in force.
    """

    def __init__(self, path: Path, poll_seconds: float) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._specs = load_model_config_file(path)  # errors at start-up are fatal
        self._stamp = self._file_stamp()
        self._checked_at = time.monotonic()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def current(self) -> list[ModelSpec]:
        if self.poll_seconds <= 0 or time.monotonic() - self._checked_at < self.poll_seconds:
            return self._specs
        self._checked_at = time.monotonic()
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return self._specs
        self._stamp = stamp
        try:
            self._specs = load_model_config_file(self.path)
            log.info("model config %s reloaded: %d models", self.path, len(self._specs))
        except ConfigError as exc:
            log.error("model config %s not reloaded, keeping the previous one: %s", self.path, exc)
        return self._specs
