"""A loaded model version and the counted references that keep it alive.

A `ServedVersion` owns one runtime and its batch queues (one per signature). A
request holds it through `acquire`/`release` (TF Serving's ServableHandle): the
manager unloads a version only after it stopped routing to it and the last
holder released it, so an in-flight request is never cut off by a swap.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import TYPE_CHECKING

from prometheus_client import Counter

from ferry.batching import BatchingConfig, BatchObserver, BatchQueue
from ferry.errors import InvalidArgument, NotFound
from ferry.repository.source import StoredVersion
from ferry.runtimes import Runtime
from ferry.stats import VersionStats
from ferry.tensors import Signature

if TYPE_CHECKING:
    from ferry.triton_config import TritonModelConfig


class VersionState(Enum):
    """TF Serving's servable states, with the numbers of its ModelVersionStatus.State."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


class ServedVersion:
    """One model version that is (or was) loaded. Thread-safe."""

    def __init__(
        self,
        model_name: str,
        stored: StoredVersion,
        runtime: Runtime,
        batching: BatchingConfig,
        observer: BatchObserver,
        batch_dimension: str = "auto",
    ) -> None:
        """`batch_dimension` is the model's ferry.toml setting ("auto", "dynamic", "none")."""
        self.model_name = model_name
        self.batch_dimension = batch_dimension
        self.version = stored.version
        self.stored = stored
        self.runtime = runtime
        self.batching = batching
        # Per-version statistics (the V2 statistics extension) see every batch first.
        self.stats = VersionStats(observer)
        self._observer = self.stats
        self._queues: dict[str, BatchQueue] = {}
        # The success counter's child per API, cached by InferenceService (its series is
        # removed with the version, so the cache lives and dies with it too).
        self.ok_counters: dict[str, Counter] = {}
        self._holders = 0
        self._accepting = True
        self._lock = threading.Condition()
        self.loaded_at = time.time()
        # The model's Triton config.pbtxt (or load-request override) it loaded with, if any:
        # what the V2 config API reports and where classification labels come from.
        self.triton_config: TritonModelConfig | None = None

    @property
    def signatures(self) -> dict[str, Signature]:
        return self.runtime.signatures

    def signature(self, name: str) -> Signature:
        """The named signature, or InvalidArgument in TF Serving's words."""
        try:
            return self.runtime.signatures[name]
        except KeyError:
            raise InvalidArgument(
                f'Serving signature name: "{name}" not found in signature def'
            ) from None

    def queue(self, signature_name: str) -> BatchQueue:
        """The batch queue of one signature, created on first use."""
        queue = self._queues.get(signature_name)
        if queue is None:
            with self._lock:
                queue = self._queues.get(signature_name)
                if queue is None:
                    signature = self.signature(signature_name)
                    runtime = self.runtime

                    def run(inputs, _name=signature_name):
                        return runtime.run(_name, inputs)

                    queue = BatchQueue(
                        f"{self.model_name}/{self.version}/{signature_name}",
                        run,
                        self.batching,
                        self._stackable(signature),
                        self._observer,
                    )
                    self._queues[signature_name] = queue
        return queue

    def _stackable(self, signature: Signature) -> bool:
        """Whether requests may be stacked: the signature decides unless the model's
        `batch_dimension` setting overrides it."""
        if self.batch_dimension == "none":
            return False
        return self.batch_dimension == "dynamic" or signature.batchable

    # -- counted references -----------------------------------------------------------

    def acquire(self) -> ServedVersion:
        """Take a reference for one request; fails once the version stopped taking requests."""
        with self._lock:
            if not self._accepting:
                raise NotFound(
                    f"Servable not found for request: Specific({self.model_name}, {self.version})"
                )
            self._holders += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._lock.notify_all()

    @property
    def holders(self) -> int:
        return self._holders

    def retire(self, timeout: float) -> bool:
        """Stop taking requests, wait for the holders to finish, then unload.

        Returns False when holders were still running after `timeout` seconds (the
        version is unloaded anyway: a stuck request must not pin memory forever).
        """
        with self._lock:
            self._accepting = False
            drained = self._lock.wait_for(lambda: self._holders == 0, timeout)
            queues = list(self._queues.values())
            self._queues.clear()
        for queue in queues:
            queue.close(timeout)
        self.runtime.unload()
        return drained
