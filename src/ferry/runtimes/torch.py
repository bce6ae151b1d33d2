"""PyTorch models: TorchScript (`model.pt`) and `torch.export` programs (`model.pt2`).

TorchScript archives record neither tensor names, dtypes nor shapes, so their signature
comes from `signature.json` (written by `ferry save` from the example input; the order
of its inputs is the order of the model's positional arguments). `torch.export`
programs carry dtypes and shapes, including which dimensions are dynamic; those win,
and `signature.json` (when present) only supplies the names.

Threads: the batcher already runs requests of different models (and, with
`num_batch_threads` > 1, of one model) side by side, so ferry does not add torch's
inter-op pool on top: it gets `--inter_op_threads` threads, or 1 when that is 0
(TorchScript's `fork` is the only user of that pool). `--intra_op_threads` > 0 sets
torch's intra-op pool (one per process, shared by every torch model); 0 leaves torch's
default (the physical cores). Runs happen under `torch.inference_mode`.

What loading runs: a `.pt2` archive may carry entries that `torch.export.load` unpickles
with Python's unrestricted unpickler, compiled code (AOTInductor), and shape expressions
that torch evaluates as Python (sympy.sympify); ferry inspects the archive first
(`ferry.runtimes.torch_archive`) and loads one with such entries only when the operator
allows it (`--allow_pickle` / `--allow_code`). A plain `torch.export.save` archive has
none of them and needs no consent. TorchScript (`torch.jit.load`) unpickles with
TorchScript's own unpickler, which builds only torch and TorchScript types, and runs the
archive's TorchScript (no Python); see docs/security.md for what that still allows.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ferry.consent import ModelConsent
from ferry.errors import InvalidArgument
from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.optional import import_framework
from ferry.runtimes.signature_file import SIGNATURE_FILE, read_signature_file
from ferry.runtimes.torch_archive import inspect_archive
from ferry.tensors import DEFAULT_SIGNATURE, Signature, TensorSpec

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"
EXPORTED_FILE = "model.pt2"
EXTRA = "torch"

# torch allows setting the inter-op pool size only once per process, before first use.
_threads_lock = threading.Lock()
_interop_configured = False


def import_torch(options: RuntimeOptions | None = None) -> Any:
    """torch, or MissingExtra naming `pip install 'ferry-serve[torch]'`.

    Unless `--allow_spinning`, OpenMP's idle threads are told to sleep rather than spin
    (`OMP_WAIT_POLICY=PASSIVE`, read once when torch's OpenMP runtime starts, so it is set
    before the first import; a value the user set wins). Spinning threads take the CPU the
    HTTP loop needs: measured with mlp_small at 64 connections, 7,523 req/s passive
    against 6,270 spinning, with the same light-load latency.
    """
    if options is not None and not options.allow_spinning and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return import_framework("torch", EXTRA, "PyTorch")


def configure_threads(torch: Any, options: RuntimeOptions) -> None:
    """Apply the thread settings once per process (see the module docstring)."""
    global _interop_configured
    with _threads_lock:
        if options.intra_op_threads > 0 and torch.get_num_threads() != options.intra_op_threads:
            torch.set_num_threads(options.intra_op_threads)
        if not _interop_configured:
            _interop_configured = True
            try:
                torch.set_num_interop_threads(max(1, options.inter_op_threads))
            except RuntimeError as exc:  # the pool already started (torch used before)
                log.debug("torch inter-op threads left as they are: %s", exc)


def load_exported_program(torch: Any, path: Path, consent: ModelConsent) -> Any:
    """`torch.export.load` of the archive at `path`, after checking that what it would
    unpickle or run is allowed; the bytes checked are the bytes loaded."""
    content = path.read_bytes()
    found = inspect_archive(torch, content)
    if found.code:
        consent.require_code(f"{path.name} carries compiled code ({_listed(found.code)})")
    if found.pickled:
        consent.require_pickle(
            f"{path.name} holds entries that torch unpickles without its restricted "
            f"unpickler ({_listed(found.pickled)}), and unpickling runs code",
            safer="Safer: save the program again with torch.export.save (`ferry save`), "
            "which writes plain weights.",
        )
    return torch.export.load(io.BytesIO(content))


def _listed(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def numpy_dtype_of(torch: Any, dtype: Any) -> np.dtype:
    """The numpy dtype of a torch dtype; ValueError for types ferry cannot carry."""
    try:
        return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        raise ValueError(f"torch dtype {dtype} has no numpy equivalent ferry can serve") from None


class TorchRuntime(Runtime):
    """A TorchScript or torch.export model on the CPU; `run` is thread-safe (modules are
    only read: inference mode records no autograd state)."""

    format_name = "pytorch"
    platforms = ("pytorch", "torch", "pytorch_libtorch", "torchscript")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._torch: Any = None
        self._module: Any = None
        self._signatures: dict[str, Signature] = {}
        self._exported = False

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return (version_dir / TORCHSCRIPT_FILE).is_file() or (version_dir / EXPORTED_FILE).is_file()

    @property
    def model_file(self) -> Path:
        exported = self.version_dir / EXPORTED_FILE
        return exported if exported.is_file() else self.version_dir / TORCHSCRIPT_FILE

    def load(self) -> None:
        torch = import_torch(self.options)
        configure_threads(torch, self.options)
        path = self.model_file
        recorded = self._recorded_signature()
        if path.name == EXPORTED_FILE:
            program = load_exported_program(torch, path, self.consent)
            signature = _exported_signature(torch, program, recorded)
            module = program.module()
            self._exported = True
        else:
            if recorded is None:
                raise ValueError(
                    f"{path.name} is TorchScript, which records no input names, dtypes or "
                    f"shapes; ferry needs them in {SIGNATURE_FILE} beside it (`ferry save` "
                    "writes it from the example input)"
                )
            module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
            signature = recorded
        self._signatures = {DEFAULT_SIGNATURE: signature}
        self._module = module
        self._torch = torch

    def _recorded_signature(self) -> Signature | None:
        path = self.version_dir / SIGNATURE_FILE
        if not path.is_file():
            return None
        signatures = read_signature_file(path)
        if DEFAULT_SIGNATURE not in signatures:
            raise ValueError(f"{path} has no {DEFAULT_SIGNATURE} signature")
        return signatures[DEFAULT_SIGNATURE]

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, module = self._torch, self._module
        if module is None:
            raise RuntimeError("model is not loaded")
        signature = self._signatures[DEFAULT_SIGNATURE]
        # from_numpy shares memory; arrays decoded from a request may be read-only views,
        # which torch refuses to wrap, so those are copied.
        args = [
            torch.from_numpy(a if a.flags.writeable else a.copy())
            for a in (np.ascontiguousarray(inputs[name]) for name in signature.inputs)
        ]
        with torch.inference_mode():
            result = module(*args)
        return _outputs_by_name(torch, result, list(signature.outputs))

    def export_onnx(self, path: Path) -> None:
        """Export with the signature's input and output names, dimension 0 dynamic
        wherever the signature says so (see `export_to_onnx`). The export works on a
        second copy of the model: the exporter alters the TorchScript module it is given
        (afterwards that module fails under inference mode), and the served one must
        keep working when the ONNX model does not match."""
        torch = self._torch
        if torch is None:
            raise RuntimeError("model is not loaded")
        from ferry.warmup import generated_inputs

        if self._exported:
            module = load_exported_program(torch, self.model_file, self.consent).module()
        else:
            module = torch.jit.load(str(self.model_file), map_location="cpu").eval()
        signature = self._signatures[DEFAULT_SIGNATURE]
        example = generated_inputs(signature, rows=2)
        args = tuple(torch.from_numpy(example[name]) for name in signature.inputs)
        export_to_onnx(torch, module, args, signature, path)

    def unload(self) -> None:
        self._module = None


def export_to_onnx(
    torch: Any, module: Any, args: tuple[Any, ...], signature: Signature, path: Path
) -> None:
    """Export through torch.onnx's TorchScript-based exporter, which needs nothing beyond
    torch (the dynamo exporter needs `onnxscript`). The module is wrapped so that it
    returns a flat tuple in the signature's output order: that exporter cannot export a
    returned dict, and the ONNX outputs must carry the signature's names. TorchScript
    modules cannot be wrapped (tracing refuses a loaded script module as a submodule):
    they are exported as they are, which fails for one that returns a dict."""
    names = list(signature.outputs)

    class FlatOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *inputs: Any) -> tuple[Any, ...]:
            result = self.inner(*inputs)
            if isinstance(result, dict):
                return tuple(result[n] for n in names)
            return tuple(result) if isinstance(result, tuple | list) else (result,)

    dynamic_axes = {
        name: {0: "batch"}
        for name, spec in (*signature.inputs.items(), *signature.outputs.items())
        if spec.has_batch_dimension
    }
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module if isinstance(module, torch.jit.ScriptModule) else FlatOutputs(),
            args,
            str(path),
            input_names=list(signature.inputs),
            output_names=names,
            dynamic_axes=dynamic_axes,
            dynamo=False,
            # A torch.export module refuses train(); every module here is in eval mode.
            training=torch.onnx.TrainingMode.PRESERVE,
        )


def _outputs_by_name(torch: Any, result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Match what the module returned (a tensor, a tuple/list, or a dict) to `names`."""
    if isinstance(result, dict):
        missing = [n for n in names if n not in result]
        if missing:
            raise InvalidArgument(f"the model returned {sorted(result)}, not {missing}")
        values = [result[n] for n in names]
    elif isinstance(result, tuple | list):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(names):
        raise ValueError(f"the model returned {len(values)} outputs; the signature has {names}")
    out: dict[str, np.ndarray] = {}
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"output {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value.detach().cpu().numpy()
    return out


def _exported_signature(torch: Any, program: Any, recorded: Signature | None) -> Signature:
    """Dtypes and shapes from the program (symbolic sizes are dynamic: -1); names from
    `signature.json` when it has as many inputs and outputs, else from the program."""
    graph_signature = program.graph_signature
    nodes = {node.name: node for node in program.graph.nodes}
    input_names = list(graph_signature.user_inputs)
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    output_values = list(output_node.args[0])
    user_outputs = output_values[-len(graph_signature.user_outputs) :] if output_values else []

    def spec(name: str, value: Any) -> TensorSpec:
        if value is None or not hasattr(value, "shape"):
            raise ValueError(f"exported program tensor {name!r} has no recorded shape")
        shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        return TensorSpec(name, numpy_dtype_of(torch, value.dtype), shape)

    in_values = [nodes[n].meta.get("val") for n in input_names]
    out_values = [getattr(n, "meta", {}).get("val") for n in user_outputs]
    if recorded is not None and len(recorded.inputs) == len(in_values):
        input_names = list(recorded.inputs)
    if recorded is not None and len(recorded.outputs) == len(out_values):
        output_names = list(recorded.outputs)
    else:
        output_names = (
            ["output"] if len(out_values) == 1 else [f"output_{i}" for i in range(len(out_values))]
        )
    inputs = {n: spec(n, v) for n, v in zip(input_names, in_values, strict=True)}
    outputs = {n: spec(n, v) for n, v in zip(output_names, out_values, strict=True)}
    return Signature(inputs, outputs)
