"""TensorFlow SavedModels (`saved_model.pb`) through TensorFlow, as TF Serving serves them.

Two kinds of SavedModel, told apart by one rule (`has_object_graph`):
- TF2 exports (`tf.saved_model.save`, Keras `model.export`) record an object graph of
  their tf.functions and variables; they load with `tf.saved_model.load` and each
  signature runs as its concrete function, which checks shapes as ferry does.
- TF1-era exports (`SavedModelBuilder`, Estimator, TF Serving's `half_plus_two` and
  `half_plus_three`) have no object graph; they load as a session bundle
  (runtimes/session_bundle.py), signatures run by tensor name, and the graph decides
  which shapes it takes (`Signature.runtime_checks_shapes`), as in TF Serving.

Every signature def of the `serve` meta graph is served under its own name
(`serving_default` and named ones), with the dtypes and shapes the signature declares
(-1 for a dimension of any size) and its method name (predict, classify, regress), so
`signature_name` routing, metadata and `:classify`/`:regress` work as in TF Serving.

What loading runs: the graph's ops, all of them TensorFlow's own. A graph that names an op
this TensorFlow does not register (a custom op) is refused before TensorFlow reads it:
its kernels would come from a library loaded with `tf.load_op_library`, which ferry never
calls, since a model folder must not bring native code. `tf.py_function` and
`tf.numpy_function` ops are refused too: they call a Python function of the process that
saved the model, which no other process has. See docs/security.md for what built-in ops
can still do (they are programs: file I/O included).

TensorFlow is imported in `load()`, never at module level: it is the `tensorflow` extra
and takes seconds to import. The helpers at the bottom (dtypes, threads, ONNX export)
are shared with the Keras runtime and the TensorFlow savers.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferry.errors import InvalidArgument
from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.optional import import_framework
from ferry.runtimes.session_bundle import SessionBundle
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec, tf_dtype_name

log = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SERVE_TAG = "serve"
# TF Serving's `--saved_model_tags` default: the meta graph tagged `serve`.
SERVE_TAGS: tuple[str, ...] = (SERVE_TAG,)
EXTRA = "tensorflow"
# Signature defs that TF writes for its own bookkeeping, not for serving.
_INTERNAL_SIGNATURES = frozenset({"__saved_model_init_op"})
# Ops that call back into Python functions registered in the saving process.
_PYTHON_CALLBACK_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def import_tensorflow(what: str = "TensorFlow SavedModel") -> ModuleType:
    """TensorFlow, or a MissingExtra naming `ferry-serve[tensorflow]`. Quiets TF's C++ start-up
    chatter (CUDA probing) unless the user asked for it, since ferry logs its own lines."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return import_framework("tensorflow", EXTRA, what)


class TensorFlowRuntime(Runtime):
    """A SavedModel's signatures; `run` is thread-safe (TF functions allow concurrent calls)."""

    format_name = "tensorflow"
    platforms = ("tensorflow", "tensorflow_savedmodel", "tf_savedmodel")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._tf: ModuleType | None = None
        self._loaded: Any = None
        self._functions: dict[str, Any] = {}
        self._signatures: dict[str, Signature] = {}
        self._bundle: SessionBundle | None = None  # TF1-era models only

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return any((version_dir / name).is_file() for name in SAVED_MODEL_FILES)

    def load(self) -> None:
        tf = import_tensorflow()
        configure_threads(tf, self.options)
        saved_model = read_saved_model(self.version_dir)
        meta_graph = serve_meta_graph(saved_model, self.options.saved_model_tags)
        tags = list(meta_graph.meta_info_def.tags)
        check_ops(meta_graph)
        signature_defs = dict(meta_graph.signature_def)
        if not has_object_graph(meta_graph):
            self._load_session_bundle(tf, signature_defs, tags)
            return
        loaded = tf.saved_model.load(str(self.version_dir), tags=tags)
        functions: dict[str, Any] = {}
        signatures: dict[str, Signature] = {}
        for name, signature_def in sorted(signature_defs.items()):
            if name in _INTERNAL_SIGNATURES or name not in loaded.signatures:
                continue
            signatures[name] = signature_from_def(tf, name, signature_def)
            functions[name] = loaded.signatures[name]
        if not signatures:
            raise ValueError(
                f"the SavedModel in {self.version_dir} has no serving signatures "
                f"(signature defs: {sorted(signature_defs)}); export it with a signature, "
                "e.g. model.export(path) or tf.saved_model.save(obj, path, signatures=...)"
            )
        self._tf, self._loaded = tf, loaded
        self._functions, self._signatures = functions, signatures

    def _load_session_bundle(
        self, tf: ModuleType, signature_defs: dict[str, Any], tags: list[str]
    ) -> None:
        """A TF1-era SavedModel into its own Session, as TF Serving loads every SavedModel."""
        served = {k: v for k, v in signature_defs.items() if k not in _INTERNAL_SIGNATURES}
        bundle = SessionBundle.load(tf, self.version_dir, tags, served, self.options)
        try:
            signatures = {
                name: signature_from_def(tf, name, served[name], runtime_checks_shapes=True)
                for name in sorted(bundle.signature_names)
            }
        except BaseException:
            bundle.close()
            raise
        if not signatures:
            bundle.close()
            raise ValueError(
                f"the SavedModel in {self.version_dir} has no serving signatures "
                f"(signature defs: {sorted(signature_defs)}); add one with "
                "builder.add_meta_graph_and_variables(..., signature_def_map=...)"
            )
        self._tf, self._bundle, self._signatures = tf, bundle, signatures

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._bundle is not None:
            return self._run_session_bundle(self._bundle, signature_name, inputs)
        tf, function = self._tf, self._functions.get(signature_name)
        if tf is None or function is None:
            raise RuntimeError("model is not loaded")
        signature = self._signatures[signature_name]

        def call(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = function(**{name: tf.constant(array) for name, array in feeds.items()})
            return {name: result[name].numpy() for name in signature.outputs}

        try:
            return run_in_fixed_batches(signature, inputs, call)
        except tf.errors.InvalidArgumentError as exc:
            # The data, not the model, is wrong (a tf.Example missing a feature, a value
            # out of range): a 400 with TF's own sentence, as TF Serving answers.
            raise InvalidArgument(short_tf_message(exc)) from None

    def _run_session_bundle(
        self, bundle: SessionBundle, signature_name: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One Session run. The graph took the request's shapes as they came; what it
        cannot take is an INVALID_ARGUMENT with TF's own sentence, as TF Serving answers."""
        tf, signature = self._tf, self._signatures[signature_name]
        try:
            return run_in_fixed_batches(
                signature, inputs, lambda feeds: bundle.run(signature_name, feeds)
            )
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidArgument(short_tf_message(exc)) from None

    def export_onnx(self, path: Path) -> None:
        if self._bundle is not None:
            raise NotImplementedError(
                "TF1-era SavedModels (no object graph) run as a session bundle and are not "
                "exported to ONNX; re-export the model with tf.saved_model.save to accelerate it"
            )
        if self._tf is None:
            raise RuntimeError("model is not loaded")
        signature = self._signatures[DEFAULT_SIGNATURE]
        export_function_onnx(self._tf, self._functions[DEFAULT_SIGNATURE], signature, path)

    def unload(self) -> None:
        if self._bundle is not None:
            self._bundle.close()
            self._bundle = None
        self._functions = {}
        self._loaded = None
        self._tf = None


# -- helpers shared with the Keras runtime and the TensorFlow savers ------------------------


def short_tf_message(exc: Exception) -> str:
    """TF's error without the graph-construction traceback it appends: the last paragraph,
    minus the `[[{{node ...}}]]` line."""
    text = str(getattr(exc, "message", exc))
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    last = paragraphs[-1] if paragraphs else text
    return last.split("\n\t [[")[0].split("\n [[")[0].strip()


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The `serve` meta graph's signature defs, read from the SavedModel proto itself.

    The proto, not the loaded object, is the source because only it records each
    signature's method name (classify/regress) and TensorInfo dtypes and shapes.
    """
    return serve_signature_defs(read_saved_model(version_dir))


def read_saved_model(version_dir: Path) -> Any:
    """The SavedModel proto of a version folder (binary or text form)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary = version_dir / SAVED_MODEL_FILES[0]
    if binary.is_file():
        saved_model.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((version_dir / SAVED_MODEL_FILES[1]).read_text(), saved_model)
    return saved_model


def check_ops(meta_graph: Any) -> None:
    """Refuse a meta graph (the one to be loaded) that uses ops this TensorFlow does not
    register (custom ops) or Python callbacks, before TensorFlow loads it; see the module
    docstring."""
    from tensorflow.python.framework import op_def_registry

    graph = meta_graph.graph_def
    used = {node.op for node in graph.node}
    for function in graph.library.function:
        used.update(node.op for node in function.node_def)
    # Calls of library functions name the function as the node's op.
    used.difference_update(f.signature.name for f in graph.library.function)
    unknown = sorted(op for op in used if op_def_registry.get(op) is None)
    if unknown:
        raise ValueError(
            f"the SavedModel uses ops this TensorFlow does not have: {', '.join(unknown[:5])}. "
            "Custom ops need their library loaded into the server (tf.load_op_library), "
            "which ferry never does: native code never comes from a model folder"
        )
    callbacks = sorted(used & _PYTHON_CALLBACK_OPS)
    if callbacks:
        raise ValueError(
            f"the SavedModel calls Python functions ({', '.join(callbacks)}: tf.py_function "
            "or tf.numpy_function), which exist only in the process that saved it; "
            "rewrite them with TensorFlow ops, or serve the code as a model.py"
        )


def has_object_graph(meta_graph: Any) -> bool:
    """The rule that picks the loader: True when the meta graph to serve records an object
    graph (a TF2 export: tf.functions and variables to restore as Python objects, for
    `tf.saved_model.load`); False for TF1-era exports, which run as a session bundle."""
    return len(meta_graph.object_graph_def.nodes) > 0


def serve_meta_graph(saved_model: Any, tags: tuple[str, ...] = SERVE_TAGS) -> Any:
    """The meta graph TF Serving loads: the one whose tag set is `tags` (its
    `--saved_model_tags`). With the default tags, a meta graph that has `serve` among
    others (`serve,gpu`) is taken when none is tagged `serve` alone; it loads under its
    own full tag set."""
    wanted = set(tags)
    graphs = list(saved_model.meta_graphs)
    for meta_graph in graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    if tuple(tags) == SERVE_TAGS:
        for meta_graph in graphs:
            if wanted <= set(meta_graph.meta_info_def.tags):
                return meta_graph
    available = [list(m.meta_info_def.tags) for m in graphs]
    raise ValueError(
        f"MetaGraphDef associated with tags '{','.join(tags)}' could not be found in the "
        f"SavedModel (available tag sets: {available}); pick one with --saved_model_tags"
    )


def serve_signature_defs(saved_model: Any, tags: tuple[str, ...] = SERVE_TAGS) -> dict[str, Any]:
    """The signature defs of the meta graph `serve_meta_graph` picks."""
    return dict(serve_meta_graph(saved_model, tags).signature_def)


def numpy_dtype_of(tf: ModuleType, dtype: Any, what: str) -> np.dtype:
    """The numpy dtype ferry carries for a TF dtype (strings: object arrays of bytes)."""
    tf_dtype = tf.as_dtype(dtype)
    if tf_dtype == tf.string:
        return STRING_DTYPE
    try:
        result = np.dtype(tf_dtype.as_numpy_dtype)
    except TypeError:
        result = None
    if result is None or tf_dtype_name(result) == "DT_INVALID":
        raise ValueError(f"{what} has dtype {tf_dtype.name}, which ferry does not serve")
    return result


def signature_from_def(
    tf: ModuleType, name: str, signature_def: Any, runtime_checks_shapes: bool = False
) -> Signature:
    """A ferry Signature from a SignatureDef proto (shapes: -1 for unknown dimensions; a
    TensorInfo without a shape, as old exports write, is of unknown rank). Each spec keeps
    its graph tensor's name (`x:0`), which metadata reports as TF Serving does."""

    def spec(key: str, info: Any, kind: str) -> TensorSpec:
        dtype = numpy_dtype_of(tf, info.dtype, f"signature '{name}' {kind} '{key}'")
        shape_proto = info.tensor_shape
        shape = (
            None
            if shape_proto.unknown_rank or not info.HasField("tensor_shape")
            else tuple(d.size if d.size >= 0 else -1 for d in shape_proto.dim)
        )
        return TensorSpec(key, dtype, shape, tensor_name=info.name)

    return Signature(
        inputs={k: spec(k, v, "input") for k, v in sorted(signature_def.inputs.items())},
        outputs={k: spec(k, v, "output") for k, v in sorted(signature_def.outputs.items())},
        method_name=signature_def.method_name or "tensorflow/serving/predict",
        runtime_checks_shapes=runtime_checks_shapes,
    )


_threads_lock = threading.Lock()
_threads_configured = False


def configure_threads(tf: ModuleType, options: RuntimeOptions) -> None:
    """Apply `--intra_op_threads`/`--inter_op_threads` to TensorFlow, once per process.

    TF's thread pools are process-wide and fixed once TF has run anything, so the first
    load decides; 0 keeps TF's default (all cores). ferry's batcher runs one batch per
    version at a time by default, so TF's intra-op pool is what uses the cores, and an
    inter-op pool larger than the intra-op one would only make the two fight.
    """
    global _threads_configured
    with _threads_lock:
        if _threads_configured:
            return
        _threads_configured = True
        try:
            if options.intra_op_threads:
                tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
            if options.inter_op_threads:
                tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
        except RuntimeError:
            # TF sizes its pools when it first runs anything; in `ferry save` the user's
            # model already ran before the check load, and a server only gets here if
            # something ran TF before its first model. Nothing is wrong with the model,
            # so this is no warning (it was one, and read like a failure).
            log.info(
                "TensorFlow already ran in this process, so it keeps its thread pools; "
                "--intra_op_threads/--inter_op_threads apply only when set before that"
            )


def run_in_fixed_batches(
    signature: Signature,
    inputs: dict[str, np.ndarray],
    call: Any,
) -> dict[str, np.ndarray]:
    """`call(inputs)`, split into runs of the signature's fixed batch size when needed.

    A model declaring a fixed dimension 0 (often 1) only gets stacked requests when its
    ferry.toml says `batch_dimension = "dynamic"`; its graph still refuses other sizes,
    so the stacked batch runs in slices of the declared size and is joined back.
    """
    fixed = {s.shape[0] for s in signature.inputs.values() if s.shape and s.shape[0] > 0}
    rows = {a.shape[0] for a in inputs.values() if a.ndim}
    if len(fixed) != 1 or len(rows) != 1:
        return call(inputs)
    size, total = fixed.pop(), rows.pop()
    if total == size or total % size:
        return call(inputs)
    parts = [
        call({k: v[start : start + size] for k, v in inputs.items()})
        for start in range(0, total, size)
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def export_function_onnx(
    tf: ModuleType, function: Any, signature: Signature, path: Path, opset: int = 17
) -> None:
    """Convert a TF function taking the signature's inputs by name and returning a dict of
    its outputs to ONNX at `path`, with the signature's input and output names.

    tf2onnx names graph tensors after TF's (`x:0`, `Identity:0`); the accelerate check
    compares names, so the ONNX graph's inputs and outputs are renamed to the signature's.
    """
    tf2onnx = import_framework("tf2onnx", EXTRA, "ONNX acceleration of TensorFlow")
    import onnx

    input_specs = [
        tf.TensorSpec(
            [None if d == -1 else d for d in spec.shape] if spec.shape is not None else None,
            tf.string if spec.dtype == STRING_DTYPE else tf.as_dtype(spec.dtype),
            name=name,
        )
        for name, spec in signature.inputs.items()
    ]
    names = list(signature.inputs)
    output_names = sorted(signature.outputs)

    @tf.function(input_signature=input_specs)
    def wrapped(*args: Any) -> list[Any]:
        result = function(**dict(zip(names, args, strict=True)))
        return [tf.identity(result[name]) for name in output_names]

    concrete = wrapped.get_concrete_function()
    model_proto, _ = tf2onnx.convert.from_function(
        wrapped, input_signature=input_specs, opset=opset
    )
    graph_inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource][: len(names)]
    graph_outputs = [t.name for t in concrete.outputs]
    rename_onnx_io(
        model_proto,
        dict(zip(graph_inputs, names, strict=True)),
        dict(zip(graph_outputs, output_names, strict=True)),
    )
    onnx.save(model_proto, str(path))


def rename_onnx_io(model: Any, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Rename graph inputs and outputs in place (every node reference follows)."""
    mapping = {**inputs, **outputs}
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
