"""The watcher: polls storage and reports settled versions to the manager.

A version folder counts only once its content fingerprint is the same in two
scans `settle_seconds` apart, so a folder that is still being copied is never
loaded half-written. (If a slow copy still slips through, the load fails, the
previous version keeps serving, and the load is retried when the content changes.)
"""

from __future__ import annotations

import logging
import threading
import time

from ferry.manager import ModelManager
from ferry.model_config import ModelSpec
from ferry.repository.catalog import ModelCatalog
from ferry.repository.source import LocalVersionSource, StoredVersion, VersionSource

log = logging.getLogger(__name__)


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
    ) -> None:
        self.catalog = catalog
        self.manager = manager
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self._confirmed: dict[tuple[str, int], StoredVersion] = {}
        self._source_errors: dict[str, str] = {}
        self._disabled: set[str] = set()
        self._stop = threading.Event()
        # Poll requests from APIs (config reload, model load/unload): a counter of finished
        # polls lets a caller wait for the first poll that started after its change.
        self._wake = threading.Condition()
        self._poll_wanted = False
        self._polling = False
        self._polls_done = 0
        self._thread = threading.Thread(target=self._loop, name="repository-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join()

    # -- changes requested through the APIs ----------------------------------------------

    def replace_catalog(self, catalog: ModelCatalog, timeout: float | None = None) -> bool:
        """Serve exactly `catalog`'s models from now on (TF Serving's config reload);
        returns True once a poll with the new catalog has finished."""
        with self._wake:
            self.catalog = catalog
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

    def configured_models(self) -> list[ModelSpec]:
        """Every model of the catalog, served or disabled."""
        return self.catalog.current()

    def is_enabled(self, name: str) -> bool:
        return name not in self._disabled

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
        try:
            specs = {
                spec.name: spec
                for spec in self.catalog.current()
                if spec.name not in self._disabled
            }
        except Exception as exc:
            log.error("cannot list models: %s", exc)
            return
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
            time.sleep(self.settle_seconds)
            for name in unsettled:
                scans[name] = self._scan(specs[name])
                self._confirm(name, first[name], scans[name])
        for name, stored in scans.items():
            if stored is None or self._stop.is_set():
                continue
            if self.settle_seconds <= 0:
                self._confirm(name, stored, stored)
            self.manager.sync(specs[name], self._settled(name, stored))

    def _scan(self, spec: ModelSpec) -> dict[int, StoredVersion] | None:
        try:
            stored = self._source(spec).list_versions()
        except Exception as exc:
            message = str(exc)
            if self._source_errors.get(spec.name) != message:
                log.error("model %s: cannot list versions: %s", spec.name, message)
                self._source_errors[spec.name] = message
            return None
        self._source_errors.pop(spec.name, None)
        return stored

    def _source(self, spec: ModelSpec) -> VersionSource:
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
        for key in [k for k in self._confirmed if k[0] == name]:
            del self._confirmed[key]
