"""The models of a SageMaker multi-model endpoint: loaded on demand, evicted least
recently used, never while a request uses them.

A multi-model endpoint (`SAGEMAKER_MULTI_MODEL=true`) serves many models from one
container, loaded when asked for: through the MME API (`POST /models`, the SageMaker
platform's call) or on the first request naming them (`TargetModel`, fetched from the
model data URL). Memory is finite, so the cache keeps at most `--max_loaded_models`
models and at most `--max_loaded_models_bytes` of model files (the size of the loaded
versions' files on disk, the estimate of what they take in memory: an ONNX or
SavedModel's weights are its files); to load one more it unloads the least recently
used models first.

Eviction never fails a request: a model is evicted only when no request is using it
(`use` counts them, under the same lock that picks the victims), and the manager's
unload then drains what still holds a version (ServedVersion's counted references) as
for any retired version. A model that is loading counts towards both limits at once,
so concurrent loads cannot overshoot; if the limits cannot be met because every other
model is in use, the load fails with MemoryExhausted (HTTP 507, the container's
answer when it has no room), and nothing is evicted for it.

Mechanism only: where the files come from (a local folder, an archive in S3) is the
caller's business (`ferry.protocols.sagemaker_mme`). Thread-safe; every method blocks
(loads run in the calling thread), so async callers use worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import FerryError, StatusCode
from ferry.manager import ModelManager
from ferry.model_config import ModelSpec
from ferry.repository.policy import AllVersions
from ferry.repository.source import LocalVersionSource, StoredVersion
from ferry.served_version import VersionState

log = logging.getLogger(__name__)

MAX_MODELS_FLAG = "--max_loaded_models"
MAX_BYTES_FLAG = "--max_loaded_models_bytes"


class AlreadyLoaded(FerryError):
    code = StatusCode.ALREADY_EXISTS


class NotLoaded(FerryError):
    code = StatusCode.NOT_FOUND


class InvalidModelFolder(FerryError):
    """The folder holds no integer version folders (the container's 404)."""

    code = StatusCode.NOT_FOUND


class MemoryExhausted(FerryError):
    """No room within the limits, even after evicting every idle model (HTTP 507)."""

    code = StatusCode.RESOURCE_EXHAUSTED


class LoadFailed(FerryError):
    code = StatusCode.INTERNAL


@dataclass(frozen=True)
class CacheLimits:
    """`--max_loaded_models` and `--max_loaded_models_bytes`; 0: no limit."""

    max_models: int = 0
    max_bytes: int = 0


@dataclass
class _Entry:
    name: str
    size: int
    loaded: threading.Event = field(default_factory=threading.Event)
    error: FerryError | None = None  # set when the load failed (then the entry is gone)
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)


def folder_size(versions: dict[int, StoredVersion]) -> int:
    """Bytes of every file of the versions (from their fingerprints: no second walk)."""
    return sum(item[1] for stored in versions.values() for item in stored.fingerprint)


class LoadedModelCache:
    """Which multi-model endpoint models are loaded, in least-recently-used order."""

    def __init__(self, manager: ModelManager, limits: CacheLimits) -> None:
        self.manager = manager
        self.limits = limits
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest use first
        self._lock = threading.Lock()
        self.evictions = 0

    # -- queries ---------------------------------------------------------------------

    def loaded_names(self) -> list[str]:
        """Models that finished loading, by name."""
        with self._lock:
            return sorted(n for n, e in self._entries.items() if e.loaded.is_set() and not e.error)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(name)
        return entry is not None and entry.loaded.is_set() and entry.error is None

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    # -- loading and unloading ----------------------------------------------------------

    def load(self, name: str, folder: Path) -> None:
        """Load `folder`'s versions as model `name`. Raises AlreadyLoaded (also while
        another load of it runs), InvalidModelFolder, MemoryExhausted, LoadFailed."""
        versions = _versions(folder)
        with self._lock:
            if name in self._entries:
                raise AlreadyLoaded(f"Model {name} is already loaded.")
            entry = _Entry(name, folder_size(versions))
            victims = self._make_room(entry.size)
            self._entries[name] = entry
        self._load_entry(entry, folder, versions, victims)

    def ensure_loaded(self, name: str, fetch: Callable[[], Path]) -> None:
        """Load `name` from the folder `fetch()` gives unless it is loaded; concurrent
        callers for the same name wait for one load. Raises what `load` raises (but not
        AlreadyLoaded) and whatever `fetch` raises."""
        while True:
            with self._lock:
                entry = self._entries.get(name)
            if entry is None:
                break
            entry.loaded.wait()
            if entry.error is None:
                return
            raise entry.error
        folder = fetch()
        try:
            self.load(name, folder)
        except AlreadyLoaded:  # another caller got there first: wait for its load
            self.ensure_loaded(name, fetch)

    def unload(self, name: str, reason: str = "unloaded") -> None:
        """Stop serving `name`; requests still holding it finish first (the manager
        drains). Raises NotLoaded."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not entry.loaded.is_set():
                raise NotLoaded(f"Model {name} is not loaded yet")
            del self._entries[name]
        self.manager.remove_model(name, reason)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Hold `name` for one request: it is not evicted until the block ends, and it
        becomes the most recently used. Raises NotLoaded."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not entry.loaded.is_set() or entry.error is not None:
                raise NotLoaded(f"Model {name} is not loaded yet.")
            entry.in_flight += 1
            entry.last_used = time.monotonic()
            self._entries.move_to_end(name)
        try:
            yield
        finally:
            with self._lock:
                entry.in_flight -= 1

    # -- internals --------------------------------------------------------------------------

    def _make_room(self, size: int) -> list[str]:
        """Pick and forget the idle models to evict so that one more model of `size`
        bytes fits (lock held); MemoryExhausted, with nothing forgotten, if it cannot."""
        limits = self.limits
        count = len(self._entries)
        total = sum(e.size for e in self._entries.values())
        victims: list[str] = []

        def over() -> bool:
            too_many = limits.max_models > 0 and count + 1 > limits.max_models
            too_big = limits.max_bytes > 0 and total + size > limits.max_bytes
            return too_many or too_big

        if limits.max_bytes > 0 and size > limits.max_bytes:
            raise MemoryExhausted(
                f"Memory exhausted: the model's {size} bytes exceed {MAX_BYTES_FLAG} "
                f"({limits.max_bytes})"
            )
        for name, entry in self._entries.items():  # least recently used first
            if not over():
                break
            if entry.in_flight == 0 and entry.loaded.is_set():
                victims.append(name)
                count -= 1
                total -= entry.size
        if over():
            raise MemoryExhausted(
                "Memory exhausted: no room to load the model: every loaded model is in use "
                f"({MAX_MODELS_FLAG} {limits.max_models or 'unlimited'}, "
                f"{MAX_BYTES_FLAG} {limits.max_bytes or 'unlimited'})"
            )
        for name in victims:
            del self._entries[name]
        return victims

    def _load_entry(
        self, entry: _Entry, folder: Path, versions: dict[int, StoredVersion], victims: list[str]
    ) -> None:
        for name in victims:
            self.evictions += 1
            log.info("multi-model endpoint: evicting %s (least recently used)", name)
            self.manager.remove_model(name, "evicted to make room (least recently used)")
        spec = ModelSpec(name=entry.name, base_path=folder, policy=AllVersions(), trusted=False)
        try:
            self.manager.sync(spec, versions)
            records = self.manager.version_status(entry.name)
            if not any(r.state is VersionState.AVAILABLE for r in records):
                errors = [r.error_message for r in records if r.error_message]
                raise LoadFailed(
                    f"Failed to load model {entry.name}: "
                    + (errors[0] if errors else "no version loaded")
                )
        except Exception as exc:
            error = (
                exc if isinstance(exc, FerryError) else LoadFailed(f"{type(exc).__name__}: {exc}")
            )
            entry.error = error
            with self._lock:
                if self._entries.get(entry.name) is entry:
                    del self._entries[entry.name]
            self.manager.remove_model(entry.name, "its load failed")
            entry.loaded.set()
            raise error from None
        entry.loaded.set()


def _versions(folder: Path) -> dict[int, StoredVersion]:
    try:
        versions = LocalVersionSource(folder).list_versions()
    except OSError:
        versions = {}
    if not versions:
        raise InvalidModelFolder(f"no integer version folders in {folder}")
    return versions
