"""TF1-era SavedModels run as TF Serving runs them: a session bundle.

A SavedModel written by `SavedModelBuilder` (TF1 graphs, Estimator exports, the classic
SageMaker recipe) is a graph plus signature defs that name its tensors (`x:0`, `y:0`).
TF Serving loads it into a Session (restore the variables, run the main/init op) and
answers each request with one `Session::Run`, feeding the signature's input tensors and
fetching its outputs by name. Nothing checks the request's shape against the signature
first: the graph decides, and what it cannot take fails with TensorFlow's own message.

`tf.saved_model.load` cannot stand in for this: it wraps such a graph in functions
pruned to the declared shapes, and refuses graphs whose signature feeds a tensor that is
not a placeholder (TF Serving's `saved_model_half_plus_two` feeds `x:0`, an Identity)
with errors like `Shapes must be equal rank, but are 2 and 0`.

Each signature runs through a callable made once at load (`Session::MakeCallable`, the
C++ path, without the Python feed checks of `Session.run`, which refuse shapes the graph
would take). Callables and the session allow concurrent calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferry.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignatureRun:
    """One signature def as a callable: feeds by graph tensor name, fetches likewise."""

    input_keys: tuple[str, ...]
    output_keys: tuple[str, ...]
    call: Any  # the session's callable: (*arrays) -> list of arrays


def dense_only(signature_def: Any) -> bool:
    """Whether every input and output is a dense tensor named in the graph (sparse and
    composite encodings have no single tensor for Predict to feed or fetch)."""
    infos = [*signature_def.inputs.values(), *signature_def.outputs.values()]
    return all(info.WhichOneof("encoding") == "name" and info.name for info in infos)


class SessionBundle:
    """A SavedModel's `serve` graph loaded into its own Session, signatures run by name.

    `run` is thread-safe. `close` must come after the last `run` has returned (the
    runtime's contract guarantees it).
    """

    def __init__(self, tf: ModuleType, session: Any, runs: dict[str, SignatureRun]) -> None:
        self._tf = tf
        self._session = session
        self._runs = runs

    @classmethod
    def load(
        cls,
        tf: ModuleType,
        version_dir: Path,
        tags: list[str],
        signature_defs: dict[str, Any],
        options: RuntimeOptions,
    ) -> SessionBundle:
        """Restore the graph and variables (running its init op) and make one callable per
        signature def whose tensors are dense; others are left out with a log line."""
        from tensorflow.core.protobuf import config_pb2

        config = config_pb2.ConfigProto(
            intra_op_parallelism_threads=options.intra_op_threads,
            inter_op_parallelism_threads=options.inter_op_threads,
            # Exports pinned to /gpu:0 (TF Serving's half_plus_two_gpu) still run here.
            allow_soft_placement=True,
        )
        # Other models share the accelerator: take its memory as needed, not all of it.
        config.gpu_options.allow_growth = True
        session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
        try:
            tf.compat.v1.saved_model.loader.load(session, tags, str(version_dir))
            runs: dict[str, SignatureRun] = {}
            for name, signature_def in sorted(signature_defs.items()):
                if not dense_only(signature_def):
                    log.warning(
                        "%s: signature '%s' has sparse or composite tensors, which Predict "
                        "cannot feed; it is not served",
                        version_dir,
                        name,
                    )
                    continue
                runs[name] = _signature_run(session, signature_def, config_pb2)
        except BaseException:
            session.close()
            raise
        return cls(tf, session, runs)

    @property
    def signature_names(self) -> frozenset[str]:
        return frozenset(self._runs)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One Session run of the signature; TensorFlow's errors propagate unchanged."""
        run = self._runs[signature_name]
        values = run.call(*(inputs[key] for key in run.input_keys))
        return dict(zip(run.output_keys, values, strict=True))

    def close(self) -> None:
        self._runs = {}
        self._session.close()


def _signature_run(session: Any, signature_def: Any, config_pb2: ModuleType) -> SignatureRun:
    input_keys = tuple(sorted(signature_def.inputs))
    output_keys = tuple(sorted(signature_def.outputs))
    options = config_pb2.CallableOptions(
        feed=[signature_def.inputs[key].name for key in input_keys],
        fetch=[signature_def.outputs[key].name for key in output_keys],
    )
    # The public `make_callable` with feeds goes through `Session.run`, whose Python-side
    # check refuses a [3] vector for a `[?, 1]` tensor that the graph would take, as TF
    # Serving's C++ `Session::Run` does; the callable from options is that C++ path.
    call = session._make_callable_from_options(options)
    return SignatureRun(input_keys, output_keys, call)
