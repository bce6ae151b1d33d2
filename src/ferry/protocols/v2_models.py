"""The Open Inference Protocol's model-level answers, shared by its REST and gRPC sides.

Metadata, readiness, Triton's model configuration, statistics and the model repository
extension are computed here once, as plain dicts in Triton's JSON shape (field names
are the protobuf field names), so REST sends them as JSON and gRPC parses the same
dict into its messages. Inference itself is not here: each transport decodes its
wire format and calls `InferenceService.predict`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import ferry
from ferry.codecs.v2 import config_datatype, tensor_metadata
from ferry.errors import FailedPrecondition, InvalidArgument, NotFound
from ferry.manager import ModelManager
from ferry.model_control import REPOSITORY_API, ModelControl
from ferry.repository.watcher import RepositoryWatcher
from ferry.served_version import ServedVersion, VersionState
from ferry.stats import Duration
from ferry.tensors import DEFAULT_SIGNATURE, Signature

SERVER_NAME = "ferry"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
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
    """A V2 version string ("" or None: the latest) as ferry's version number."""
    if not text:
        return None
    if not text.isdigit():
        raise InvalidArgument(f"Model version must be a non-negative integer; got '{text}'")
    return int(text)


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
        is_ready: Callable[[], bool],
        control: ModelControl | None = None,
    ) -> None:
        self.manager = manager
        self.watcher = watcher
        self.is_ready = is_ready
        # Load and unload are the operator's (--enable_model_control); the index is not.
        self.control = control or ModelControl()

    # -- server ---------------------------------------------------------------------------

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": ferry.__version__, "extensions": EXTENSIONS}

    # -- one model ------------------------------------------------------------------------

    def acquire(self, model: str, version: int | None) -> ServedVersion:
        """A counted reference (release it); NotFound in V2's words."""
        try:
            return self.manager.acquire(model, version)
        except NotFound:
            which = (
                f"version {version} of model '{model}'"
                if version is not None
                else f"model '{model}'"
            )
            raise NotFound(
                f"Request for unknown model: {which} is not found or not ready"
            ) from None

    def model_ready(self, model: str, version: int | None) -> bool:
        try:
            self.acquire(model, version).release()
        except NotFound:
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
        """Triton's ModelConfig for the version: batch dimension left out of `dims` when
        requests are batched along it (max_batch_size > 0), as Triton's clients expect."""
        served = self.acquire(model, version)
        try:
            signature = signature_of(served)
            batching = served.batching
            batched = signature.batchable and batching.enabled
            platform, backend = platform_of(served)

            def dims(shape: tuple[int, ...] | None) -> list[int]:
                if shape is None:
                    return [-1]
                return list(shape[1:] if batched else shape)

            config: dict = {
                "name": model,
                "platform": platform,
                "backend": backend,
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
            if batched:
                config["dynamic_batching"] = {
                    "preferred_batch_size": list(batching.allowed_batch_sizes),
                    "max_queue_delay_microseconds": batching.batch_timeout_micros,
                }
            return config
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

    def _configured(self, model: str) -> None:
        names = {spec.name for spec in self._watcher().configured_models()}
        if model not in names:
            raise NotFound(f"Model '{model}' is not in the model repository")

    async def load(self, model: str) -> None:
        """Serve a configured model again (or re-scan it); returns once it serves, raises
        FailedPrecondition with the load error if no version could be loaded."""
        self.control.require(REPOSITORY_API)
        self._configured(model)
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
        raise FailedPrecondition(f"Failed to load model '{model}': {detail}")

    async def unload(self, model: str) -> None:
        """Stop serving a model until it is loaded again; in-flight requests finish."""
        self.control.require(REPOSITORY_API)
        self._configured(model)
        watcher = self._watcher()
        await asyncio.to_thread(watcher.set_enabled, model, False, _REPOSITORY_TIMEOUT_SECONDS)


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
