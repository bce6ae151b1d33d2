"""Where model versions come from: a model's base path holding integer version folders.

A `VersionSource` lists the versions in storage, each with a fingerprint that
changes whenever the folder's content changes, and hands out a local folder to
load from. Local disk is one implementation; object storage (s3_source.py) is the
other: it lists versions remotely and `materialize`s one into a local cache folder,
so whatever loads a version only ever sees local paths.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# (relative path, size, mtime in ns) of every file: cheap to compute, and it
# changes when a copy is still in progress or when files are replaced.
# Where ferry caches files it derives from a version (see runtimes/accelerate.py).
CACHE_DIR_NAME = ".ferry"

# Object storage uses (key, size, ETag) instead: any value that changes with the content.
Fingerprint = tuple[tuple[str, int, int | str], ...]


class ModelFileTooLarge(ValueError):
    """A model-level file is larger than its reader's bound; nothing of it was read."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(f"{name}: {size} bytes")
        self.size = size


@dataclass(frozen=True)
class StoredVersion:
    """One version folder as found in storage."""

    version: int
    path: Path  # local once materialized; before that, where it will be
    fingerprint: Fingerprint
    # The local folder with the model-level files (batching_params.pbtxt, ferry.toml).
    model_dir: Path | None = None


class VersionSource(ABC):
    """Lists a model's versions in storage. Implementations must be safe to call from one
    poller thread at a time; errors (storage unreachable) propagate to the caller."""

    # Remote sources copy versions into a local cache (`materialize`); objects in a store
    # appear whole, so the watcher downloads them during the settle check.
    remote: bool = False

    @abstractmethod
    def list_versions(self) -> dict[int, StoredVersion]:
        """Every integer-named version folder, with its current fingerprint."""

    def materialize(self, stored: StoredVersion) -> StoredVersion:
        """`stored` with its files in the local folder `stored.path`, complete (remote
        sources download it, atomically); errors propagate. Local versions already are."""
        return stored

    def retain(self, keep: Iterable[Path]) -> None:
        """A hint after each sync: local copies outside `keep` are no longer needed."""
        return None

    @abstractmethod
    def read_model_file(self, name: str, max_bytes: int) -> bytes | None:
        """The content of the model-level file `name` (beside the version folders) as
        it is now; None when there is none. Raises ModelFileTooLarge, before reading any
        of it, when it holds more than `max_bytes`; storage errors propagate."""


class LocalVersionSource(VersionSource):
    """Version folders `<base_path>/<int>/` on a local (or mounted) file system."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = base_path

    def list_versions(self) -> dict[int, StoredVersion]:
        if not self.base_path.is_dir():
            raise FileNotFoundError(f"model base path {self.base_path} is not a directory")
        found: dict[int, StoredVersion] = {}
        for entry in os.scandir(self.base_path):
            # Non-numeric children (README, staging folders) are ignored, as in TF Serving.
            # isdigit() alone also accepts digits such as "²" that int() refuses.
            if not (entry.name.isascii() and entry.name.isdigit()) or not entry.is_dir():
                continue
            version_dir = Path(entry.path)
            found[int(entry.name)] = StoredVersion(
                int(entry.name), version_dir, fingerprint(version_dir), self.base_path
            )
        return found

    def read_model_file(self, name: str, max_bytes: int) -> bytes | None:
        path = self.base_path / name
        try:
            # O_NONBLOCK: a FIFO under the name must not stall the watcher.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            if info.st_size > max_bytes:
                raise ModelFileTooLarge(name, info.st_size)
            content = file.read(max_bytes + 1)  # it may grow after the fstat
        if len(content) > max_bytes:
            raise ModelFileTooLarge(name, len(content))
        return content


def fingerprint(folder: Path) -> Fingerprint:
    """A content fingerprint of `folder` from file names, sizes and modification times."""
    items = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # ferry's own caches (accelerated or lower-precision builds) are not model content.
        dirnames[:] = [d for d in dirnames if d != CACHE_DIR_NAME]
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we walked: the folder is changing
                continue
            items.append((os.path.relpath(full, folder), stat.st_size, stat.st_mtime_ns))
    items.sort()
    return tuple(items)
