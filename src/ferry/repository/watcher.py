"""The watcher: polls storage and reports settled versions to the manager.

A version folder counts only once its content fingerprint is the same in two
scans `settle_seconds` apart, so a folder that is still being copied is never
loaded half-written. (If a slow copy still slips through, the load fails, the
previous version keeps serving, and the load is retried when the content changes.)

The source of each model is chosen by its base path: a local folder, or an `s3://`
URL whose aspired versions are downloaded into a local cache (`materialize`) before
the manager sees them. Objects in a store appear whole, so their download runs during
the settle window instead of after it; with `--s3_event_queue_url` the bucket's S3
events (`s3_events.S3EventListener`) ask for a poll at once. Storage that cannot be
read is reported in the model's status and retried with exponential backoff; the
versions already loaded keep serving. A model's version labels file (label_file.py) is
read on every poll too, so labels move on every replica from one upload.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ferry.errors import FerryError, StatusCode, StorageError
from ferry.manager import ModelManager
from ferry.model_config import ModelSpec
from ferry.repository.catalog import ModelCatalog
from ferry.repository.label_file import DEFAULT_MAX_VERSION_LABELS_FILE_BYTES, VersionLabelFiles
from ferry.repository.layout import LayoutWarnings, model_folder_problem
from ferry.repository.location import (
    S3_EXTRA_HINT,
    BasePath,
    ObjectStoreOptions,
    S3Url,
    s3_support_installed,
)
from ferry.repository.source import LocalVersionSource, StoredVersion, VersionSource

log = logging.getLogger(__name__)

# Retries of unreadable storage back off from one poll interval up to this.
MAX_RETRY_SECONDS = 30.0
_CATALOG = "\0catalog"  # the backoff key of the catalog itself (no model has this name)


class RetrySchedule:
    """When to try unreadable storage again: after the first failure at the next poll,
    then after twice as long each time, up to `max_seconds`, so that an outage costs
    a few requests per minute instead of one per poll, and recovery is still seen soon."""

    def __init__(self, base_seconds: float, max_seconds: float = MAX_RETRY_SECONDS) -> None:
        self.base_seconds = max(base_seconds, 0.0)
        self.max_seconds = max_seconds
        self._failures: dict[str, int] = {}
        self._next_try: dict[str, float] = {}

    def due(self, key: str) -> bool:
        return time.monotonic() >= self._next_try.get(key, 0.0)

    def failed(self, key: str) -> float:
        """Record a failure; returns the seconds until the next try."""
        count = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(self.base_seconds * 2 ** (count - 1), self.max_seconds)
        self._next_try[key] = time.monotonic() + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
        self._next_try.pop(key, None)


class RepositoryWatcher:
    """Polls a catalog's models every `poll_seconds` on a background thread.

    `poll_seconds` follows TF Serving's `--file_system_poll_wait_seconds`: 0 scans
    once at start-up, a negative value never scans after the first.
    """

    def __init__(
        self,
        catalog: ModelCatalog,
        manager: ModelManager,
        poll_seconds: float,
        settle_seconds: float = 0.5,
        object_store: ObjectStoreOptions | None = None,
        max_version_labels_file_bytes: int = DEFAULT_MAX_VERSION_LABELS_FILE_BYTES,
    ) -> None:
        self.catalog = catalog
        self.manager = manager
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self._confirmed: dict[tuple[str, int], StoredVersion] = {}
        self._source_errors: dict[str, str] = {}
        self.object_store = object_store or ObjectStoreOptions()
        # Remote sources hold a client and the last listing: one per base path, reused.
        self._remote_sources: dict[BasePath, VersionSource] = {}
        self._retries = RetrySchedule(poll_seconds)
        self._version_labels = VersionLabelFiles(max_version_labels_file_bytes)
        self._last_specs: dict[str, ModelSpec] = {}
        self._disabled: set[str] = set()
        # Model folders without versions, said once per change (ferry.repository.layout).
        self._layout = LayoutWarnings()
        # Models served from elsewhere than the catalog says (a V2 load with uploaded
        # files: ferry.repository.uploads), by name; they may add names to the catalog's.
        self._overrides: dict[str, ModelSpec] = {}
        self._stop = threading.Event()
        # Poll requests from APIs (config reload, model load/unload): a counter of finished
        # polls lets a caller wait for the first poll that started after its change.
        self._wake = threading.Condition()
        self._poll_wanted = False
        self._polling = False
        self._polls_done = 0
        self._thread = threading.Thread(target=self._loop, name="repository-watcher", daemon=True)
        self._events = None  # S3EventListener with --s3_event_queue_url

    def start(self) -> None:
        self._thread.start()
        if self.object_store.event_queue_url:
            from ferry.repository.s3_events import S3EventListener  # needs boto3

            self._events = S3EventListener(
                self.object_store.event_queue_url, self.object_store_prefixes, self.request_poll
            )
            self._events.start()

    def stop(self) -> None:
        self._stop.set()
        if self._events is not None:
            self._events.stop()
        with self._wake:
            self._wake.notify_all()
        self._thread.join()

    # -- changes requested through the APIs ----------------------------------------------

    def replace_catalog(self, catalog: ModelCatalog, timeout: float | None = None) -> bool:
        """Serve exactly `catalog`'s models from now on (TF Serving's config reload);
        returns True once a poll with the new catalog has finished."""
        with self._wake:
            self.catalog = catalog
            self._overrides.clear()
        return self.poll_now(timeout)

    def set_enabled(self, name: str, enabled: bool, timeout: float | None = None) -> bool:
        """Unload a configured model until it is enabled again, or load it back (the
        V2 repository extension's unload/load); True once a poll applied it."""
        with self._wake:
            if enabled:
                self._disabled.discard(name)
            else:
                self._disabled.add(name)
        return self.poll_now(timeout)

    def override_model(
        self, name: str, spec: ModelSpec | None, timeout: float | None = None
    ) -> bool:
        """Serve `name` from `spec` rather than from the catalog (None: from the catalog
        again, or not at all if the catalog has no such model); True once a poll applied
        it. A replaced catalog (a config reload) drops every override."""
        with self._wake:
            if spec is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = spec
        return self.poll_now(timeout)

    def overridden(self, name: str) -> bool:
        with self._wake:
            return name in self._overrides

    def configured_models(self) -> list[ModelSpec]:
        """Every model of the catalog, served or disabled."""
        return self._catalog_specs()

    def catalog_models(self) -> list[ModelSpec]:
        """The catalog's own models, without the overrides."""
        return self.catalog.current()

    def _catalog_specs(self) -> list[ModelSpec]:
        with self._wake:
            overrides = dict(self._overrides)
        specs = [overrides.pop(spec.name, spec) for spec in self.catalog.current()]
        return specs + list(overrides.values())

    def is_enabled(self, name: str) -> bool:
        return name not in self._disabled

    def request_poll(self) -> None:
        """Ask for a poll at once without waiting for it (storage events)."""
        with self._wake:
            self._poll_wanted = True
            self._wake.notify_all()

    def object_store_prefixes(self) -> list[tuple[str, str]]:
        """(bucket, key prefix) of every object-store model and root being watched."""
        urls = [s.base_path for s in self._last_specs.values() if isinstance(s.base_path, S3Url)]
        root = getattr(self.catalog, "root", None)
        if isinstance(root, S3Url):
            urls.append(root)
        return [(url.bucket, url.key_prefix) for url in urls]

    def poll_now(self, timeout: float | None = None) -> bool:
        """Ask for a poll at once and wait until one that started after this call finished."""
        with self._wake:
            target = self._polls_done + (2 if self._polling else 1)
            self._poll_wanted = True
            self._wake.notify_all()
            return self._wake.wait_for(
                lambda: self._polls_done >= target or self._stop.is_set(), timeout
            )

    # -- the polling loop ----------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._poll_counted()
        finally:
            self.manager.initial_sync_done.set()
        while not self._stop.is_set():
            with self._wake:
                wait = self.poll_seconds if self.poll_seconds > 0 else None
                self._wake.wait_for(lambda: self._poll_wanted or self._stop.is_set(), wait)
                if self._stop.is_set():
                    return
                if not self._poll_wanted and self.poll_seconds <= 0:
                    continue
            try:
                self._poll_counted()
            except Exception:  # the watcher must survive anything storage throws at it
                log.exception("repository poll failed")

    def _poll_counted(self) -> None:
        with self._wake:
            self._poll_wanted = False
            self._polling = True
        try:
            self.poll_once()
        finally:
            with self._wake:
                self._polling = False
                self._polls_done += 1
                self._wake.notify_all()

    def poll_once(self) -> None:
        """Scan every model, wait for new content to settle, and sync the manager."""
        if not self._retries.due(_CATALOG):
            return
        try:
            specs = {
                spec.name: spec for spec in self._catalog_specs() if spec.name not in self._disabled
            }
        except Exception as exc:
            if isinstance(exc, StorageError):
                delay = self._retries.failed(_CATALOG)
                log.error("cannot list models (next try in %.1fs): %s", delay, exc)
            else:
                log.error("cannot list models: %s", exc)
            # The models found before keep serving; their status says why nothing changes.
            for name in self.manager.model_names():
                if name in self._last_specs:
                    self._report_error(self._last_specs[name], exc, log_it=False)
            return
        self._retries.succeeded(_CATALOG)
        self._last_specs = specs
        self._remote_sources = {
            base: source
            for base, source in self._remote_sources.items()
            if any(spec.base_path == base for spec in specs.values())
        }
        for name in self.manager.model_names():
            if name not in specs:
                self.manager.remove_model(name)
                self._forget(name)
        scans = {name: self._scan(spec) for name, spec in specs.items()}
        unsettled = {
            name
            for name, stored in scans.items()
            if stored is not None and any(self._is_new(name, s) for s in stored.values())
        }
        if unsettled and self.settle_seconds > 0 and not self._stop.is_set():
            first = {name: scans[name] for name in unsettled}
            started = time.monotonic()
            self._download_while_settling(specs, first)
            self._stop.wait(self.settle_seconds - (time.monotonic() - started))
            for name in unsettled:
                scans[name] = self._scan(specs[name])
                self._confirm(name, first[name], scans[name])
        for name, stored in scans.items():
            if stored is None or self._stop.is_set():
                continue
            if self.settle_seconds <= 0:
                self._confirm(name, stored, stored)
            spec = specs[name]
            source = self._source(spec)
            try:
                local = self._materialize(source, spec, self._settled(name, stored))
            except Exception as exc:
                # Nothing new loads; what serves keeps serving. Retried with backoff.
                self._report_error(spec, exc)
                continue
            self._storage_ok(spec)
            # The labels file is read after the listing, so on S3 it is the listed one.
            self.manager.sync(self._version_labels.applied(spec, source), local)
            try:
                source.retain(s.path for s in local.values())
            except OSError as exc:
                log.warning("model %s: cannot clean the download cache: %s", name, exc)

    def _download_while_settling(
        self, specs: dict[str, ModelSpec], first: dict[str, dict[int, StoredVersion] | None]
    ) -> None:
        """Download new remote versions as first listed, during the settle window.

        Objects in a store appear whole, so the download can start at once and the
        settle check's second listing follows it (after the rest of the window, if the
        download was quicker): cold start then costs the download, not the download plus
        the window. The cache folder is named by the listed content, so if the second
        listing differs, the version is not confirmed, this folder is not used, and
        `retain` removes it; errors are left to the download after confirmation, which
        reports them."""
        for name, stored in first.items():
            if stored is None or self._stop.is_set():
                continue
            spec = specs[name]
            source = self._source(spec)
            if not source.remote:
                continue
            aspired = spec.policy.select(stored)
            for version in sorted(aspired, reverse=True):
                if self._is_new(name, stored[version]):
                    try:
                        source.materialize(stored[version])
                    except Exception as exc:
                        log.debug("model %s: early download of %d failed: %s", name, version, exc)

    def _materialize(
        self, source: VersionSource, spec: ModelSpec, settled: dict[int, StoredVersion]
    ) -> dict[int, StoredVersion]:
        """The settled versions, those the policy wants served made local first; the
        others are passed on as listed (the manager only loads aspired versions)."""
        aspired = spec.policy.select(settled)
        return {
            version: source.materialize(stored) if version in aspired else stored
            for version, stored in settled.items()
        }

    def _scan(self, spec: ModelSpec) -> dict[int, StoredVersion] | None:
        if not self._retries.due(spec.name):
            return None
        try:
            source = self._source(spec)
            stored = source.list_versions()
        except Exception as exc:
            self._report_error(spec, exc)
            return None
        if not source.remote and isinstance(spec.base_path, Path):
            problem = None if stored else model_folder_problem(spec.name, spec.base_path)
            self._layout.report(f"model {spec.name}", problem)
        return stored

    def _storage_ok(self, spec: ModelSpec) -> None:
        """The model's storage was listed and its aspired versions are local: clear the
        error and the backoff (only now, so a download that keeps failing backs off)."""
        self._retries.succeeded(spec.name)
        if self._source_errors.pop(spec.name, None) is not None:
            log.info("model %s: storage %s readable again", spec.name, spec.base_path)
            self.manager.clear_storage_error(spec.name)

    def _report_error(self, spec: ModelSpec, exc: Exception, log_it: bool = True) -> None:
        """Show a storage failure in the model's status and schedule the next try."""
        message = str(exc)
        # Only object storage backs off: a local folder costs nothing to look at again.
        delay = self._retries.failed(spec.name) if isinstance(exc, StorageError) else 0.0
        if log_it and self._source_errors.get(spec.name) != message:
            log.error(
                "model %s: cannot read versions (next try in %.1fs): %s",
                spec.name,
                max(delay, self.poll_seconds),
                message,
            )
        self._source_errors[spec.name] = message
        if isinstance(exc, FerryError):
            code = exc.code
        elif isinstance(exc, FileNotFoundError):
            code = StatusCode.NOT_FOUND
        elif isinstance(exc, PermissionError):
            code = StatusCode.PERMISSION_DENIED
        else:
            code = StatusCode.UNAVAILABLE
        self.manager.report_storage_error(spec, code, message)

    def _source(self, spec: ModelSpec) -> VersionSource:
        """The source for the base path's kind: local folder or object storage."""
        if isinstance(spec.base_path, S3Url):
            source = self._remote_sources.get(spec.base_path)
            if source is None:
                if not s3_support_installed():
                    raise StorageError(S3_EXTRA_HINT, StatusCode.FAILED_PRECONDITION)
                from ferry.repository.s3_source import S3VersionSource  # needs boto3

                source = S3VersionSource(spec.base_path, self.object_store)
                self._remote_sources[spec.base_path] = source
            return source
        return LocalVersionSource(spec.base_path)

    def _is_new(self, name: str, stored: StoredVersion) -> bool:
        confirmed = self._confirmed.get((name, stored.version))
        return confirmed is None or confirmed.fingerprint != stored.fingerprint

    def _confirm(
        self,
        name: str,
        first: dict[int, StoredVersion] | None,
        second: dict[int, StoredVersion] | None,
    ) -> None:
        if first is None or second is None:
            return
        for version, stored in second.items():
            earlier = first.get(version)
            if earlier is not None and earlier.fingerprint == stored.fingerprint:
                self._confirmed[(name, version)] = stored

    def _settled(self, name: str, stored: dict[int, StoredVersion]) -> dict[int, StoredVersion]:
        """Versions whose content is confirmed; a version that is changing right now is
        reported with its last confirmed content, so it keeps serving meanwhile."""
        for key in [k for k in self._confirmed if k[0] == name and k[1] not in stored]:
            del self._confirmed[key]
        return {
            version: self._confirmed[(name, version)]
            for version in stored
            if (name, version) in self._confirmed
        }

    def _forget(self, name: str) -> None:
        self._version_labels.forget(name)
        for key in [k for k in self._confirmed if k[0] == name]:
            del self._confirmed[key]
