"""The manager: loads, warms up, swaps, drains and unloads model versions.

It keeps the served-version table that requests read. Storage is polled by the
watcher, which reports what it found (`sync`); the manager decides what to load
and unload with an availability-preserving rule:

* a version is routable only after it loaded and warmed up;
* an old version stops receiving requests only once its replacement is routable,
  and is unloaded after its in-flight requests finish (counted references);
* a version that fails to load never displaces a serving one: the failure shows in
  the status, the previous version keeps serving, and the load is retried when the
  folder's content changes.

Loads run on the caller's thread (the watcher's), one at a time; unloads run on a
thread each so that a slow drain never stalls polling. Route lookups are lock-free
reads of an immutable snapshot that is replaced on every change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from ferry.batching import BatchingConfig
from ferry.consent import ExecutionConsent
from ferry.errors import FerryError, InvalidArgument, NotFound, StatusCode
from ferry.metrics import Metrics
from ferry.model_config import BATCHING_FILE_NAME, ModelSpec, load_batching_file
from ferry.model_options import ModelOptions, load_model_options
from ferry.readiness import Phase, Readiness, ReadyWhen, models_readiness
from ferry.repository.policy import VersionPolicy
from ferry.repository.source import StoredVersion
from ferry.runtimes import RuntimeOptions, runtime_for
from ferry.runtimes.accelerate import accelerate_onnx
from ferry.runtimes.precision import serve_precision
from ferry.runtimes.reshaped import ReshapedRuntime
from ferry.served_version import ServedVersion, VersionState
from ferry.tensors import DEFAULT_SIGNATURE
from ferry.tfserving_messages import LABEL_VERSION_UNAVAILABLE
from ferry.triton_config import (
    TritonConfigLimits,
    TritonModelConfig,
    build_config,
    config_fingerprint,
    read_model_config,
)
from ferry.warmup import warm_up

log = logging.getLogger(__name__)

# Finished versions kept in a model's status history (TF Serving keeps all, which grows).
_MAX_ENDED_RECORDS = 10


@dataclass
class VersionRecord:
    """What the status API reports for one version number."""

    version: int
    state: VersionState
    error_code: StatusCode = StatusCode.OK
    error_message: str = ""
    failed_fingerprint: tuple | None = None  # content that failed; retried when it changes
    updated_at: float = field(default_factory=time.time)

    def fail(self, code: StatusCode, message: str, fingerprint: tuple) -> None:
        self.error_code, self.error_message = code, message
        self.failed_fingerprint = fingerprint
        self.updated_at = time.time()

    def clear_error(self) -> None:
        self.error_code, self.error_message, self.failed_fingerprint = StatusCode.OK, "", None


@dataclass(frozen=True)
class _Routes:
    """Immutable routing snapshot of one model."""

    versions: dict[int, ServedVersion]
    latest: ServedVersion | None
    labels: dict[str, int]


@dataclass(frozen=True)
class StorageStatus:
    """Why a model's storage cannot be read now (unreachable, access denied, missing).

    Model-level, not per version: the versions already loaded keep serving and keep
    their own status, while the watcher retries the storage with backoff.
    """

    error_code: StatusCode
    error_message: str
    since: float = field(default_factory=time.time)


@dataclass
class _Model:
    spec: ModelSpec  # spec.labels: the labels wanted (config file or version labels file)
    serving: dict[int, ServedVersion] = field(default_factory=dict)
    records: dict[int, VersionRecord] = field(default_factory=dict)
    storage: StorageStatus | None = None
    # The labels in force (`_assign_labels`), and the wanted moves refused and logged.
    labels: dict[str, int] = field(default_factory=dict)
    refused_labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ManagerOptions:
    """How versions are loaded and retired."""

    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    enable_warmup: bool = True
    # TF Serving's --num_request_iterations_for_warmup: runs of each recorded request.
    warmup_iterations: int = 1
    drain_timeout_seconds: float = 60.0
    # Defaults for every model's `ferry.toml` (e.g. `--accelerate onnx` for all models).
    model_defaults: ModelOptions = field(default_factory=ModelOptions)
    # The operator's consent to run models' code or unpickle their files (ferry.consent);
    # a spec that is not `trusted` gets none of it.
    consent: ExecutionConsent = field(default_factory=ExecutionConsent)
    # TF Serving's --allow_version_labels_for_unavailable_models: a label not yet in force
    # may name a version that is not AVAILABLE (see `_assign_labels`).
    allow_version_labels_for_unavailable_models: bool = False
    # --max_triton_config_bytes, --max_triton_label_file_bytes: what a Triton config (a
    # config.pbtxt or a load request's override) may make ferry read.
    triton_limits: TritonConfigLimits = field(default_factory=TritonConfigLimits)


class ModelManager:
    """The served-version table and the load/unload lifecycle. Thread-safe."""

    def __init__(self, options: ManagerOptions, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self._models: dict[str, _Model] = {}
        self._routes: dict[str, _Routes] = {}
        self._lock = threading.RLock()
        self._retiring: set[threading.Thread] = set()
        self.initial_sync_done = threading.Event()
        # Triton config overrides from load requests, by model: (generation, ModelConfig).
        # An override replaces the model's config.pbtxt until the next override, as in
        # Triton; a new generation makes every version of the model load again.
        self._config_overrides: dict[str, tuple[int, Message]] = {}
        self._override_generation = 0
        self._built_overrides: dict[str, tuple[tuple, TritonModelConfig]] = {}

    # -- requests (hot path) ----------------------------------------------------------

    def acquire(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> ServedVersion:
        """A counted reference to the version a request asks for; the caller must `release`.

        Raises NotFound / InvalidArgument with TF Serving's messages.

        Lock-free: the routes snapshot is read, then the version acquired. A version
        retires only after a snapshot without it was published, so when the acquire finds
        it retiring, a newer snapshot exists: the lookup is retried on it. A request for
        the latest version therefore never fails because a newer one arrived.
        """
        while True:
            table = self._routes
            served = self._route(table.get(model), model, version, label)
            try:
                return served.acquire()
            except NotFound:
                if self._routes is table:
                    raise  # retired without a newer snapshot: the model is going away

    @staticmethod
    def _route(
        routes: _Routes | None, model: str, version: int | None, label: str | None
    ) -> ServedVersion:
        """The version a request names in one routes snapshot; TF Serving's errors."""
        if version is None and label is not None:
            if routes is None or label not in routes.labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = routes.labels[label]
        if version is None:
            served = routes.latest if routes else None
            if served is None:
                raise NotFound(f"Servable not found for request: Latest({model})")
        else:
            served = routes.versions.get(version) if routes else None
            if served is None:
                raise NotFound(f"Servable not found for request: Specific({model}, {version})")
        return served

    # -- status -------------------------------------------------------------------------

    def has_model(self, name: str) -> bool:
        """True when the model is configured (whatever the state of its versions)."""
        return name in self._models

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def version_status(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[VersionRecord]:
        """Status records, newest version first; NotFound in TF Serving's words."""
        with self._lock:
            state = self._models.get(model)
            records = dict(state.records) if state else {}
            labels = dict(state.labels) if state else {}
        if label is not None:
            if label not in labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if not records:
            storage = state.storage if state else None
            reason = f": {storage.error_message}" if storage else ""
            raise NotFound(f"Could not find any versions of model {model}{reason}")
        if version is not None:
            if version not in records:
                raise NotFound(f"Could not find version {version} of model {model}")
            return [records[version]]
        return [records[v] for v in sorted(records, reverse=True)]

    def storage_status(self, model: str) -> StorageStatus | None:
        """The model's storage error, None while its storage answers."""
        with self._lock:
            state = self._models.get(model)
            return state.storage if state else None

    def report_storage_error(self, spec: ModelSpec, code: StatusCode, message: str) -> None:
        """Record that `spec`'s storage cannot be read (watcher thread). A model seen for
        the first time is registered without versions, so the status APIs can say why
        it has none instead of "not found"."""
        with self._lock:
            model = self._models.get(spec.name)
            if model is None:
                model = self._models[spec.name] = _Model(spec)
            if model.storage is None or model.storage.error_message != message:
                model.storage = StorageStatus(code, message)

    def clear_storage_error(self, name: str) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is not None:
                model.storage = None

    def labels(self, model: str) -> dict[str, int]:
        """The model's labels in force (not those wanted but refused)."""
        with self._lock:
            state = self._models.get(model)
            return dict(state.labels) if state else {}

    def is_ready(self, ready_when: ReadyWhen = ReadyWhen.ALL) -> Readiness:
        """Whether the configured models serve as `ready_when` asks (ferry.readiness);
        STARTING until the first storage scan has been loaded (successfully or not).
        A configured model with no serving version (none in storage, all failed, or its
        storage unreadable) counts as not serving."""
        if not self.initial_sync_done.is_set():
            return Readiness(Phase.STARTING, "the first scan of the model storage is loading")
        with self._lock:
            serving = {name: bool(model.serving) for name, model in self._models.items()}
        return models_readiness(serving, ready_when)

    # -- lifecycle (watcher thread) ------------------------------------------------------

    def sync(self, spec: ModelSpec, stored: dict[int, StoredVersion]) -> None:
        """Bring one model in line with what storage holds now."""
        with self._lock:
            model = self._models.get(spec.name)
            if model is None:
                model = self._models[spec.name] = _Model(spec)
                log.info(
                    "model %s: watching %s (policy: %s)",
                    spec.name,
                    spec.base_path,
                    spec.policy.describe(),
                )
            model.spec = spec
        aspired = self._policy_for(spec, stored).select(stored)
        # Newest first, so the version that "latest" requests want is routable soonest.
        for version in sorted(aspired, reverse=True):
            self._load_if_needed(model, stored[version])
        with self._lock:
            keep = self._versions_to_keep(model, aspired, stored)
            leaving = [v for v in model.serving if v not in keep]
            retired = [model.serving.pop(v) for v in leaving]
            for version, record in model.records.items():
                if version not in stored:
                    # Gone from storage: nothing left to retry, so the record may be trimmed.
                    record.failed_fingerprint = None
            self._trim_records(model)
            self._publish(model, report_refused_labels=True)
        for served in retired:
            self._retire_async(model, served)

    def set_config_override(
        self, name: str, message: Message
    ) -> tuple[int, tuple[int, Message] | None]:
        """Load `name` with this ModelConfig instead of its config.pbtxt from the next
        sync on; returns the override's generation (see `loaded_override`) and the
        override it replaced (for `restore_config_override`)."""
        with self._lock:
            previous = self._config_overrides.get(name)
            self._override_generation += 1
            self._config_overrides[name] = (self._override_generation, message)
            return self._override_generation, previous

    def restore_config_override(self, name: str, previous: tuple[int, Message] | None) -> None:
        """Put back the override `set_config_override` replaced (a refused override)."""
        with self._lock:
            if previous is None:
                self._config_overrides.pop(name, None)
            else:
                self._config_overrides[name] = previous

    def loaded_override(self, served: ServedVersion) -> int:
        """The generation of the config override `served` loaded with (0: none)."""
        fingerprint = served.stored.fingerprint
        return fingerprint[-1] if isinstance(fingerprint, tuple) and fingerprint else 0

    def remove_model(self, name: str, reason: str = "removed from configuration") -> None:
        """Stop serving every version of a model (no longer configured, or shutting down)."""
        with self._lock:
            model = self._models.pop(name, None)
            self._routes = {k: v for k, v in self._routes.items() if k != name}
            if model is None:
                return
            retired = list(model.serving.values())
            model.serving.clear()
            self.metrics.loaded_versions.labels(name).set(0)
        log.info("model %s: %s", name, reason)
        for served in retired:
            self._retire_async(model, served)

    def shutdown(self) -> None:
        """Unload everything, waiting for in-flight requests (up to the drain timeout)."""
        for name in self.model_names():
            self.remove_model(name, "unloading for shutdown")
        self.wait_for_retirements()

    def wait_for_retirements(self, timeout: float | None = None) -> None:
        with self._lock:
            threads = list(self._retiring)
        for thread in threads:
            thread.join(timeout)

    # -- internals -----------------------------------------------------------------------

    def _load_if_needed(self, model: _Model, stored: StoredVersion) -> None:
        name, version = model.spec.name, stored.version
        stored = self._with_config_fingerprint(name, stored)
        with self._lock:
            current = model.serving.get(version)
            record = model.records.get(version)
        if current is not None and current.stored.fingerprint == stored.fingerprint:
            return
        if record is not None and record.failed_fingerprint == stored.fingerprint:
            return  # same content failed before: wait for it to change
        reloading = current is not None
        with self._lock:
            if record is None:
                record = model.records[version] = VersionRecord(version, VersionState.START)
            if not reloading:
                record.state = VersionState.LOADING
        log.info(
            "model %s: %s version %d from %s",
            name,
            "reloading changed" if reloading else "loading",
            version,
            stored.path,
        )
        started = time.monotonic()
        try:
            served = self._load(model.spec, stored)
        except Exception as exc:
            code = (
                exc.code
                if isinstance(exc, FerryError)
                else (
                    StatusCode.NOT_FOUND
                    if isinstance(exc, FileNotFoundError)
                    else StatusCode.UNKNOWN
                )
            )
            message = str(exc) if isinstance(exc, FerryError) else f"{type(exc).__name__}: {exc}"
            if reloading:
                message = f"reload failed, still serving the previous files: {message}"
            with self._lock:
                record.fail(code, message, stored.fingerprint)
                if not reloading:
                    record.state = VersionState.END
            self.metrics.load_failures.labels(name).inc()
            log.error(
                "model %s: version %d failed to load after %.2fs: %s",
                name,
                version,
                time.monotonic() - started,
                message,
            )
            return
        seconds = time.monotonic() - started
        with self._lock:
            previous = model.serving.get(version)
            model.serving[version] = served
            record.state = VersionState.AVAILABLE
            record.clear_error()
            record.updated_at = time.time()
            self._publish(model)
        self.metrics.load_latency.labels(name).observe(seconds)
        log.info(
            "model %s: version %d AVAILABLE (%s, %.2fs)",
            name,
            version,
            served.runtime.format_name,
            seconds,
        )
        if previous is not None:
            self._retire_async(model, previous, keep_record=True)

    def _load(self, spec: ModelSpec, stored: StoredVersion) -> ServedVersion:
        model_options = load_model_options(
            self._option_folders(stored), self.options.model_defaults
        )
        consent = self.options.consent.for_model(spec.name, spec.trusted)
        triton = self._triton_config(spec.name, stored)
        platform = spec.platform
        if triton is not None:
            platform = platform or triton.runtime_platform
            model_options = model_options.model_copy(
                update={"batch_dimension": triton.batch_dimension}
            )
        runtime = runtime_for(stored.path, self.options.runtime, platform, model_options, consent)
        runtime.load()
        if triton is not None:
            signatures = runtime.signatures
            try:
                triton.check_against(
                    spec.name, signatures.get(DEFAULT_SIGNATURE) or next(iter(signatures.values()))
                )
                reshaped_inputs, reshaped_outputs = triton.reshapes()
                if reshaped_inputs or reshaped_outputs:
                    runtime = ReshapedRuntime(
                        runtime, reshaped_inputs, reshaped_outputs, triton.max_batch_size > 0
                    )
            except Exception:
                runtime.unload()
                raise
        if model_options.accelerate == "onnx":
            runtime = accelerate_onnx(
                runtime, self.options.runtime, model_options.accelerate_tolerance
            )
        if model_options.precision:
            runtime = serve_precision(runtime, self.options.runtime, model_options.precision)
        try:
            if self.options.enable_warmup:
                warm_up(runtime, self.options.warmup_iterations)
        except Exception as exc:
            runtime.unload()
            raise RuntimeError(f"warm-up failed: {type(exc).__name__}: {exc}") from exc
        batching = self._batching_for(spec, stored)
        if triton is not None:
            batching = triton.batching(batching)
        observer = self.metrics.batch_observer(spec.name, stored.version)
        served = ServedVersion(
            spec.name, stored, runtime, batching, observer, model_options.batch_dimension
        )
        served.triton_config = triton
        return served

    # -- Triton's config.pbtxt (ferry.triton_config) ------------------------------------

    def _triton_config(self, name: str, stored: StoredVersion) -> TritonModelConfig | None:
        """The load-request override, else the model folder's config.pbtxt, else None."""
        with self._lock:
            override = self._config_overrides.get(name)
        if override is None:
            return read_model_config(stored.model_dir, name, self.options.triton_limits)
        key = (override[0], stored.model_dir)
        built = self._built_overrides.get(name)
        if built is None or built[0] != key:
            # Built once per override and folder, so its warnings are logged once.
            built = (
                key,
                build_config(
                    override[1],
                    name,
                    stored.model_dir,
                    "config override",
                    self.options.triton_limits,
                ),
            )
            self._built_overrides[name] = built
        return built[1]

    def _policy_for(self, spec: ModelSpec, stored: dict[int, StoredVersion]) -> VersionPolicy:
        """The Triton config's version_policy where it sets one, else the spec's. A config
        that does not parse leaves the spec's policy (its load then fails, saying why)."""
        if not stored:
            return spec.policy
        try:
            triton = self._triton_config(spec.name, next(iter(stored.values())))
            policy = triton.policy() if triton is not None else None
        except FerryError:
            return spec.policy
        return policy or spec.policy

    def _with_config_fingerprint(self, name: str, stored: StoredVersion) -> StoredVersion:
        """`stored` with the config file's state and the override's generation added to its
        fingerprint, so an edited config.pbtxt or a new override reloads the version."""
        with self._lock:
            override = self._config_overrides.get(name)
        generation = override[0] if override is not None else 0
        return dataclasses.replace(
            stored,
            fingerprint=(stored.fingerprint, config_fingerprint(stored.model_dir), generation),
        )

    def _batching_for(self, spec: ModelSpec, stored: StoredVersion) -> BatchingConfig:
        """Global parameters, overridden by a model-level then a version-level file."""
        config = self.options.batching
        for folder in self._option_folders(stored):
            candidate = folder / BATCHING_FILE_NAME
            if candidate.is_file():
                config = load_batching_file(candidate, config)
        return config

    @staticmethod
    def _option_folders(stored: StoredVersion) -> list[Path]:
        """Local folders with per-model settings, model level first. `stored` says where
        they are (never the spec's base path, which may be a remote URL)."""
        if stored.model_dir is None:
            return [stored.path]
        return [stored.model_dir, stored.path]

    def _versions_to_keep(
        self, model: _Model, aspired: set[int], stored: dict[int, StoredVersion]
    ) -> set[int]:
        """Aspired versions that serve, plus stand-ins for aspired versions that failed:
        the newest other serving versions still in storage, one per missing version."""
        keep = {v for v in aspired if v in model.serving}
        missing = len(aspired) - len(keep)
        stand_ins = sorted(
            (v for v in model.serving if v not in aspired and v in stored), reverse=True
        )
        keep.update(stand_ins[:missing])
        return keep

    def _publish(self, model: _Model, report_refused_labels: bool = False) -> None:
        """Replace the model's routing snapshot (lock held)."""
        self._assign_labels(model, report_refused_labels)
        versions = dict(model.serving)
        latest = versions[max(versions)] if versions else None
        routes = dict(self._routes)
        routes[model.spec.name] = _Routes(versions, latest, dict(model.labels))
        self._routes = routes
        self.metrics.loaded_versions.labels(model.spec.name).set(len(versions))

    def _assign_labels(self, model: _Model, report_refused: bool) -> None:
        """Put the wanted labels (`model.spec.labels`) in force where TF Serving's rule
        allows (server_core.cc, UpdateModelVersionLabelMap), label by label (lock held).

        A label may move only to a version AVAILABLE here; otherwise the label stays where
        it is (or stays unknown, if new) and the refusal is logged once, in TF Serving's
        words. So during a rollout a replica that has not loaded the new version yet keeps
        answering by the old one, and moves as soon as the new one is AVAILABLE (labels are
        reassigned on every publish). `--allow_version_labels_for_unavailable_models` lets
        a label that is not in force (or already at that version) name any version; a
        label in force still moves only to an AVAILABLE version, as in TF Serving. A label
        in force at a version that has since been unloaded stays (requests by it get
        "Servable not found", as in TF Serving): keep labelled versions in the policy.
        Refusals are logged only when `report_refused` (the end of a sync), not while a
        sync is still loading the versions the labels want."""
        allow_new = self.options.allow_version_labels_for_unavailable_models
        assigned: dict[str, int] = {}
        for label, version in model.spec.labels.items():
            current = model.labels.get(label)
            if version in model.serving or current == version or (allow_new and current is None):
                assigned[label] = version
                model.refused_labels.pop(label, None)
                continue
            if current is not None:
                assigned[label] = current
            if report_refused and model.refused_labels.get(label) != version:
                model.refused_labels[label] = version
                log.error(
                    "model %s: %s; label %r %s",
                    model.spec.name,
                    LABEL_VERSION_UNAVAILABLE.format(version=version, model=model.spec.name),
                    label,
                    f"stays at version {current}" if current is not None else "not assigned",
                )
        for label in [k for k in model.refused_labels if k not in model.spec.labels]:
            del model.refused_labels[label]
        if assigned != model.labels:
            log.info("model %s: version labels in force: %s", model.spec.name, assigned)
        model.labels = assigned

    def _retire_async(
        self, model: _Model, served: ServedVersion, keep_record: bool = False
    ) -> None:
        name, version = model.spec.name, served.version
        with self._lock:
            record = model.records.get(version)
            if record is not None and not keep_record:
                record.state = VersionState.UNLOADING

        def retire() -> None:
            drained = served.retire(self.options.drain_timeout_seconds)
            if not drained:
                log.warning(
                    "model %s: version %d unloaded with requests still running after %.0fs",
                    name,
                    version,
                    self.options.drain_timeout_seconds,
                )
            with self._lock:
                gone = version not in model.serving
                if not keep_record and gone:
                    rec = model.records.get(version)
                    if rec is not None:
                        rec.state = VersionState.END
                        rec.updated_at = time.time()
                    self._trim_records(model)
                self._retiring.discard(threading.current_thread())
            if gone:  # not replaced by a reload of the same version number
                self.metrics.forget_version(name, version)
            log.info("model %s: version %d unloaded", name, version)
            release_memory()

        thread = threading.Thread(target=retire, name=f"retire-{name}-{version}", daemon=True)
        with self._lock:
            self._retiring.add(thread)
        thread.start()

    def _trim_records(self, model: _Model) -> None:
        ended = sorted(
            v
            for v, r in model.records.items()
            if r.state == VersionState.END
            and v not in model.serving
            and r.failed_fingerprint is None
        )
        for version in ended[:-_MAX_ENDED_RECORDS]:
            del model.records[version]


_libc = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS stays flat across reloads.

    glibc keeps freed arenas mapped; `malloc_trim` returns them. Elsewhere it is skipped.
    """
    gc.collect()
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
