"""The Open Inference Protocol's model-level answers, shared by its REST and gRPC sides.

Metadata, readiness, Triton's model configuration, statistics and the model repository
extension are computed here once, as plain dicts in Triton's JSON shape (field names
are the protobuf field names), so REST sends them as JSON and gRPC parses the same
dict into its messages. Inference itself is not here: each transport decodes its
wire format and calls `InferenceService.predict`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import ferry
from ferry import triton_messages
from ferry.codecs.v2 import config_datatype, tensor_metadata
from ferry.errors import (
    FailedPrecondition,
    FerryError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from ferry.manager import ModelManager
from ferry.model_config import ModelSpec
from ferry.model_control import REPOSITORY_API, ModelControl
from ferry.readiness import Readiness
from ferry.repository.uploads import FILE_PREFIX, ModelUploads, file_parameters
from ferry.repository.watcher import RepositoryWatcher
from ferry.served_version import ServedVersion, VersionState
from ferry.stats import Duration
from ferry.tensors import DEFAULT_SIGNATURE, Signature
from ferry.triton_config import parse_json_config, reported_config

SERVER_NAME = "ferry"
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "statistics",
    "model_configuration",
]
# Advertised only while the operator lets clients use it (--allow_client_shm).
SHARED_MEMORY_EXTENSION = "system_shared_memory"
# Triton's platform/backend names per ferry runtime format (what its clients expect).
_PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "pytorch": ("pytorch_libtorch", "pytorch"),
}
# How long a repository load/unload call waits for the watcher to apply it.
_REPOSITORY_TIMEOUT_SECONDS = 600.0
_INDEX_STATE = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
    VersionState.UNKNOWN: "UNAVAILABLE",
}


def parse_version(text: str | None) -> int | None:
    """A V2 version string ("" or None: the latest) as ferry's version number, parsed
    and refused as Triton does."""
    return triton_messages.model_version(text)


def signature_of(served: ServedVersion) -> Signature:
    """The signature V2 requests use: `serving_default`, else the model's only one."""
    signatures = served.signatures
    if DEFAULT_SIGNATURE in signatures:
        return signatures[DEFAULT_SIGNATURE]
    return next(iter(signatures.values()))


def signature_name_of(served: ServedVersion) -> str:
    signatures = served.signatures
    return DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else next(iter(signatures))


def platform_of(served: ServedVersion) -> tuple[str, str]:
    """(platform, backend) in Triton's words."""
    name = served.runtime.format_name
    return _PLATFORMS.get(name, (name, name))


class V2Models:
    """Model-level queries over the manager (and the watcher, for the repository)."""

    def __init__(
        self,
        manager: ModelManager,
        watcher: RepositoryWatcher | None,
        readiness: Callable[[], Readiness],
        control: ModelControl | None = None,
        shared_memory: bool = False,
        uploads: ModelUploads | None = None,
    ) -> None:
        self.manager = manager
        self.watcher = watcher
        self.readiness = readiness  # the server's one verdict (ferry.readiness)
        self.extensions = [*EXTENSIONS, *([SHARED_MEMORY_EXTENSION] if shared_memory else [])]
        # Load and unload are the operator's (--enable_model_control); the index is not.
        self.control = control or ModelControl()
        # Where a load's `file:` parameters go (shared by REST and gRPC).
        self.uploads = uploads or ModelUploads()

    # -- server ---------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.readiness().ready

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": ferry.__version__, "extensions": self.extensions}

    # -- one model ------------------------------------------------------------------------

    def acquire(self, model: str, version: int | None) -> ServedVersion:
        """A counted reference (release it); a missing model or version raises Triton's
        error (`lookup_error`)."""
        try:
            return self.manager.acquire(model, version)
        except NotFound:
            raise self.lookup_error(model, version) from None

    def lookup_error(self, model: str, version: int | None) -> FerryError:
        """Why `model` (at `version`, None: the latest) cannot answer, in Triton's words
        and codes: the manager's NotFound says only that it cannot."""
        if not self.manager.has_model(model):
            if self.watcher is not None and self._unloaded(model):
                return triton_messages.no_available_versions(model)  # Triton, after unload
            return triton_messages.unknown_model(model)
        try:
            records = {r.version: r for r in self.manager.version_status(model)}
        except NotFound:
            records = {}
        if version is None:
            return triton_messages.no_available_versions(model)
        record = records.get(version)
        if record is None:
            return triton_messages.unknown_version(model, version)
        return triton_messages.version_not_ready(model, version)

    def model_ready(self, model: str, version: int | None) -> bool:
        """Whether the model (version) serves now. Never an error, as in Triton, whose
        ModelReady answers `ready: false` for an unknown model or a version that is not
        at ready state (its lifecycle tests assert that over HTTP and gRPC alike)."""
        try:
            self.acquire(model, version).release()
        except (NotFound, Unavailable):
            return False
        return True

    def available_versions(self, model: str) -> list[int]:
        try:
            records = self.manager.version_status(model)
        except NotFound:
            return []
        return sorted(r.version for r in records if r.state == VersionState.AVAILABLE)

    def model_metadata(self, model: str, version: int | None) -> dict:
        served = self.acquire(model, version)
        try:
            signature = signature_of(served)
            return {
                "name": model,
                "versions": [str(v) for v in self.available_versions(model)],
                "platform": platform_of(served)[0],
                "inputs": [tensor_metadata(s) for s in signature.inputs.values()],
                "outputs": [tensor_metadata(s) for s in signature.outputs.values()],
            }
        finally:
            served.release()

    def model_config(self, model: str, version: int | None) -> dict:
        """Triton's ModelConfig for the version: its config.pbtxt (or load override) as
        read, with what Triton auto-completes filled in from the model; without one, the
        whole config from the model. The batch dimension is left out of `dims` when
        requests are batched along it (max_batch_size > 0), as Triton's clients expect."""
        served = self.acquire(model, version)
        try:
            derived = _derived_config(model, served)
            if served.triton_config is None:
                return derived
            return _completed(reported_config(served.triton_config), derived, model)
        finally:
            served.release()

    # -- statistics -----------------------------------------------------------------------

    def statistics(self, model: str | None, version: int | None) -> dict:
        """`{"model_stats": [...]}` for one version, every serving version of a model, or
        every model (model None)."""
        if model is None:
            entries = [e for name in self.manager.model_names() for e in self._stats_of(name)]
            return {"model_stats": entries}
        if version is not None:
            served = self.acquire(model, version)
            try:
                return {"model_stats": [_stats_entry(served)]}
            finally:
                served.release()
        entries = list(self._stats_of(model))
        if not entries:
            self.acquire(model, None).release()  # raises NotFound in V2's words
        return {"model_stats": entries}

    def _stats_of(self, model: str) -> Iterator[dict]:
        for number in self.available_versions(model):
            try:
                served = self.manager.acquire(model, number)
            except NotFound:
                continue  # unloaded since it was listed
            try:
                yield _stats_entry(served)
            finally:
                served.release()

    # -- model repository extension -------------------------------------------------------

    def _watcher(self) -> RepositoryWatcher:
        if self.watcher is None:
            raise FailedPrecondition("This server has no model repository to control")
        return self.watcher

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        """Every configured model: one entry per known version, or one without a version
        for a model that has none (unloaded, or still being scanned)."""
        watcher = self._watcher()
        entries: list[dict] = []
        for spec in watcher.configured_models():
            records = []
            if watcher.is_enabled(spec.name):
                try:
                    records = self.manager.version_status(spec.name)
                except NotFound:
                    records = []
            if not records:
                storage = self.manager.storage_status(spec.name)
                reason = (
                    "unloaded"
                    if not watcher.is_enabled(spec.name)
                    else (storage.error_message if storage else "")
                )
                entries.append({"name": spec.name, "state": "UNAVAILABLE", "reason": reason})
                continue
            for record in sorted(records, key=lambda r: r.version):
                entries.append(
                    {
                        "name": spec.name,
                        "version": str(record.version),
                        "state": _INDEX_STATE[record.state],
                        "reason": record.error_message,
                    }
                )
        if ready_only:
            entries = [e for e in entries if e["state"] == "READY"]
        return entries

    def _unloaded(self, model: str) -> bool:
        """In the repository but unloaded by a repository request."""
        return self._configured(model) and not self._watcher().is_enabled(model)

    def _configured(self, model: str) -> bool:
        return model in {spec.name for spec in self._watcher().configured_models()}

    async def load(
        self,
        model: str,
        parameters: Mapping[str, object] | None = None,
        base64_files: bool = True,
    ) -> None:
        """Serve a configured model again (or re-scan it); returns once it serves, raises
        Triton's "failed to load" error (INTERNAL) if no version could be loaded.

        `parameters["config"]` (Triton's config override, a JSON ModelConfig) replaces the
        model's config.pbtxt from now on; a config that does not parse, names another
        model or does not fit the model file is refused and the previous one stays.
        `file:<version>/<name>` parameters (base64 over REST, bytes over gRPC) are the
        model's files: with a config override (required, as in Triton) the model, a new
        name or a configured one, is served from them (ferry.repository.uploads); a load
        without them serves a configured model from its repository again."""
        self.control.require(REPOSITORY_API)
        parameters = dict(parameters or {})
        files = file_parameters(parameters, base64_files)
        if files:
            await self._load_uploaded(model, files, parameters.get("config"))
            return
        if any(key.startswith(FILE_PREFIX) for key in parameters):
            raise triton_messages.load_failed(model, "no file in the file override")
        watcher = self._watcher()
        if watcher.overridden(model) and model in {s.name for s in watcher.catalog_models()}:
            # Back to the operator's repository, as Triton does on a plain load.
            await asyncio.to_thread(
                watcher.override_model, model, None, _REPOSITORY_TIMEOUT_SECONDS
            )
            self.uploads.forget(model)
        if not self._configured(model):
            raise triton_messages.load_not_in_repository(model)
        override = parameters.get("config")
        if override is not None:
            await self._load_with_config(model, override)
            return
        watcher = self._watcher()
        await asyncio.to_thread(watcher.set_enabled, model, True, _REPOSITORY_TIMEOUT_SECONDS)
        if self.model_ready(model, None):
            return
        try:
            errors = [
                r.error_message for r in self.manager.version_status(model) if r.error_message
            ]
        except NotFound:
            errors = []
        detail = "; ".join(errors) or "no version of the model could be loaded"
        raise triton_messages.load_failed(model, detail)

    async def _load_uploaded(self, model: str, files: dict[str, bytes], override: object) -> None:
        """Serve `model` from uploaded files (see `load`); refused, the model keeps what
        it served before."""
        if override is None:
            # Triton's answer to files without a config (its test_file_override).
            raise triton_messages.load_failed(model, "failed to poll from model repository")
        folder = await asyncio.to_thread(self.uploads.write, model, files)
        watcher = self._watcher()
        previous = next((s for s in watcher.configured_models() if s.name == model), None)
        was_overridden = watcher.overridden(model)
        spec = ModelSpec(model, folder, trusted=False)  # no consent for uploaded code
        await asyncio.to_thread(watcher.override_model, model, spec, _REPOSITORY_TIMEOUT_SECONDS)
        try:
            await self._load_with_config(model, override)
        except BaseException:
            restored = previous if was_overridden else None
            await asyncio.to_thread(
                watcher.override_model, model, restored, _REPOSITORY_TIMEOUT_SECONDS
            )
            self.uploads.discard(folder)
            raise
        self.uploads.commit(model, folder)

    async def _load_with_config(self, model: str, override: object) -> None:
        if not isinstance(override, str):
            raise InvalidArgument(
                f"failed to load '{model}': the 'config' parameter must be a JSON string"
            )
        message = parse_json_config(override, model, self.manager.options.triton_limits)
        if message.name and message.name != model:
            raise InvalidArgument(
                f"failed to load '{model}', unexpected directory name '{model}' for model "
                f"'{message.name}', directory name must equal model name"
            )
        generation, previous = self.manager.set_config_override(model, message)
        watcher = self._watcher()
        await asyncio.to_thread(watcher.set_enabled, model, True, _REPOSITORY_TIMEOUT_SECONDS)
        try:
            served = self.manager.acquire(model)
        except NotFound:
            served = None
        if served is not None:
            loaded = self.manager.loaded_override(served)
            served.release()
            if loaded == generation:
                return
        failures = [
            f"version {r.version} is at UNAVAILABLE state: {r.error_message}"
            for r in self._records(model)
            if r.error_message
        ]
        # Refused: the model keeps (or gets back) the config it had.
        self.manager.restore_config_override(model, previous)
        await asyncio.to_thread(watcher.poll_now, _REPOSITORY_TIMEOUT_SECONDS)
        detail = "; ".join(failures) or "no version of the model could be loaded"
        raise InvalidArgument(f"load failed for model '{model}': {detail}")

    def _records(self, model: str) -> list:
        try:
            return self.manager.version_status(model)
        except NotFound:
            return []

    async def unload(self, model: str) -> None:
        """Stop serving a model until it is loaded again; in-flight requests finish."""
        self.control.require(REPOSITORY_API)
        if not self._configured(model):
            return  # as in Triton: unloading a model it does not have does nothing
        watcher = self._watcher()
        await asyncio.to_thread(watcher.set_enabled, model, False, _REPOSITORY_TIMEOUT_SECONDS)


def is_batched(served: ServedVersion) -> bool:
    """Whether dimension 0 of the version's tensors is the batch (Triton's
    max_batch_size > 0): as its config.pbtxt says, else as ferry batches it."""
    if served.triton_config is not None:
        return served.triton_config.max_batch_size > 0
    return signature_of(served).batchable and served.batching.enabled


def classification_labels(served: ServedVersion) -> dict[str, tuple[str, ...]]:
    """Each output's labels (config.pbtxt's label_filename), for the classification
    extension."""
    return served.triton_config.labels if served.triton_config is not None else {}


def _derived_config(model: str, served: ServedVersion) -> dict:
    """The ModelConfig ferry derives from the model and its batching alone."""
    signature = signature_of(served)
    batching = served.batching
    batched = is_batched(served)
    platform, backend = platform_of(served)

    def dims(shape: tuple[int, ...] | None) -> list[int]:
        if shape is None:
            return [-1]
        return list(shape[1:] if batched else shape)

    config: dict = {
        "name": model,
        "platform": platform,
        "backend": backend,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": batching.max_batch_size if batched else 0,
        "input": [
            {
                "name": s.name,
                "data_type": config_datatype(s.dtype),
                "format": "FORMAT_NONE",
                "dims": dims(s.shape),
            }
            for s in signature.inputs.values()
        ],
        "output": [
            {"name": s.name, "data_type": config_datatype(s.dtype), "dims": dims(s.shape)}
            for s in signature.outputs.values()
        ],
        "instance_group": [
            {"name": model, "kind": "KIND_CPU", "count": batching.num_batch_threads}
        ],
    }
    if batched and batching.enabled:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.allowed_batch_sizes),
            "max_queue_delay_microseconds": batching.batch_timeout_micros,
        }
    return config


def _completed(reported: dict, derived: dict, model: str) -> dict:
    """A config.pbtxt's fields, completed as Triton's auto-complete does: name, platform
    and backend, version policy, inputs and outputs (or their missing data types and
    dims) and instance groups come from the model where the file leaves them out."""
    config = dict(reported)
    config["name"] = model
    if not config.get("platform") and not config.get("backend"):
        config["platform"], config["backend"] = derived["platform"], derived["backend"]
    elif not config.get("platform"):
        config["platform"] = derived["platform"]
    elif not config.get("backend"):
        config["backend"] = derived["backend"]
    config.setdefault("version_policy", derived["version_policy"])
    for kind in ("input", "output"):
        known = {t["name"]: t for t in derived[kind]}
        if not config.get(kind):
            config[kind] = [dict(t) for t in derived[kind]]
            continue
        for tensor in config[kind]:
            model_tensor = known.get(tensor.get("name"), {})
            if tensor.get("data_type", "TYPE_INVALID") == "TYPE_INVALID":
                tensor["data_type"] = model_tensor.get("data_type", "TYPE_INVALID")
            if not tensor.get("dims"):
                tensor["dims"] = list(model_tensor.get("dims", []))
    groups = config.get("instance_group") or [dict(g) for g in derived["instance_group"]]
    for index, group in enumerate(groups):
        group.setdefault("name", "")
        group["name"] = group["name"] or f"{model}_{index}"
        group["count"] = group.get("count") or 1
        if group.get("kind", "KIND_AUTO") == "KIND_AUTO":
            group["kind"] = "KIND_CPU"
    config["instance_group"] = groups
    return config


def _stats_entry(served: ServedVersion) -> dict:
    snap = served.stats.snapshot()
    empty = Duration().as_dict()
    return {
        "name": served.model_name,
        "version": str(served.version),
        "last_inference": snap.last_inference_ms,
        "inference_count": snap.inference_count,
        "execution_count": snap.execution_count,
        "inference_stats": {
            "success": snap.success.as_dict(),
            "fail": snap.fail.as_dict(),
            "queue": snap.queue.as_dict(),
            "compute_input": snap.compute_input.as_dict(),
            "compute_infer": snap.compute_infer.as_dict(),
            "compute_output": snap.compute_output.as_dict(),
            "cache_hit": empty,
            "cache_miss": empty,
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": d.count, "ns": 0},
                "compute_infer": d.as_dict(),
                "compute_output": {"count": d.count, "ns": 0},
            }
            for size, d in sorted(snap.batch_sizes.items())
        ],
    }
