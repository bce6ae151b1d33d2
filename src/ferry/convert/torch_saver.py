"""Saving PyTorch models: a `torch.nn.Module` (with an example input), a TorchScript
module, a `torch.export.ExportedProgram`, or a `.pt2` file.

Formats:
  torchscript (default)  `model.pt`, traced with `torch.jit.trace` (script modules are
                          saved as they are)
  export                  `model.pt2`, a `torch.export` program with a dynamic batch
                          dimension
  onnx                    `model.onnx` through `torch.onnx.export`, served by onnxruntime

Why an example: tracing needs one, and TorchScript keeps no names, dtypes or shapes, so
ferry records them in `signature.json` from the example and the model's answer to it.
Dimension 0 of the example is taken to be the batch dimension (recorded as -1, so
requests are batched); a model that cannot take other batch sizes should say
`batch_dimension = "none"` in its `ferry.toml`. The example may be a tensor or numpy
array, a tuple of them (positional arguments), or a dict keyed by the names of
`forward`'s parameters. Input names are `forward`'s parameter names; output names are
`output` for one tensor, `output_0`, `output_1`, ... for a tuple, and the keys of a
returned dict. The module is traced in eval mode (dropout off, batch-norm statistics
frozen), as it will serve; its own training flag is restored afterwards.
"""

from __future__ import annotations

import inspect
import io
import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ferry.convert.save import SaveError, Saver
from ferry.runtimes.onnx import MODEL_FILE
from ferry.runtimes.signature_file import SIGNATURE_FILE, signatures_json
from ferry.runtimes.torch import (
    EXPORTED_FILE,
    TORCHSCRIPT_FILE,
    export_to_onnx,
    import_torch,
    numpy_dtype_of,
)
from ferry.tensors import DEFAULT_SIGNATURE, Signature, TensorSpec


class TorchSaver(Saver):
    name = "pytorch"
    formats = ("torchscript", "export", "onnx")

    def accepts(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return Path(model).suffix == ".pt2" and Path(model).is_file()
        torch = sys.modules.get("torch")
        if torch is None:  # the object cannot be a torch model if torch was never imported
            return False
        return isinstance(model, torch.nn.Module | torch.export.ExportedProgram)

    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        torch = import_torch()
        if isinstance(model, str | Path):
            if format != "export":
                raise SaveError(f"{model} is a torch.export program; save it with format export")
            # The program carries its own names, dtypes and shapes.
            shutil.copyfile(model, folder / EXPORTED_FILE)
            return
        if isinstance(model, torch.export.ExportedProgram):
            if format != "export":
                raise SaveError("an ExportedProgram can only be saved with format export")
            torch.export.save(model, str(folder / EXPORTED_FILE))
            return
        if example is None:
            raise SaveError(
                "saving a torch.nn.Module needs an example input "
                "(ferry.save(model, path, example=torch.randn(1, 4)))"
            )
        names = _parameter_names(model)
        args = _example_args(torch, example, names)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                result = model(*args)
            signature = _signature(torch, names[: len(args)], args, result)
            if format == "torchscript":
                _save_torchscript(torch, model, args, folder)
            elif format == "export":
                _save_exported(torch, model, args, folder)
            else:
                export_to_onnx(
                    torch, _exportable(torch, model), args, signature, folder / MODEL_FILE
                )
                return  # an ONNX model carries its own signature
        finally:
            model.train(was_training)
        (folder / SIGNATURE_FILE).write_text(
            json.dumps(signatures_json({DEFAULT_SIGNATURE: signature}), indent=2) + "\n"
        )


def _parameter_names(model: Any) -> list[str]:
    """Names of `forward`'s positional parameters (TorchScript keeps them in its schema)."""
    forward = model.forward
    schema = getattr(forward, "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments if a.name != "self"]
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


def _example_args(torch: Any, example: Any, names: list[str]) -> tuple[Any, ...]:
    """The example as positional tensors, in `forward`'s parameter order."""
    if isinstance(example, dict):
        unknown = [k for k in example if k not in names]
        if unknown:
            raise SaveError(f"example keys {unknown} are not parameters of forward {names}")
        missing = [n for n in names[: len(example)] if n not in example]
        if missing:
            raise SaveError(f"the example needs {missing} too (forward takes {names})")
        values = [example[n] for n in names[: len(example)]]
    elif isinstance(example, tuple | list):
        values = list(example)
    else:
        values = [example]
    if len(names) < len(values):  # *args or no recoverable names
        names[:] = [f"input_{i}" for i in range(len(values))]
    return tuple(_tensor(torch, v) for v in values)


def _tensor(torch: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise SaveError(f"example inputs must be tensors or numpy arrays, not {type(value).__name__}")


def _signature(torch: Any, names: list[str], args: tuple[Any, ...], result: Any) -> Signature:
    """Names, dtypes and shapes (dimension 0 dynamic) of the example and the answer."""
    if isinstance(result, dict):
        output_names, values = [str(k) for k in result], list(result.values())
    elif isinstance(result, tuple | list):
        output_names = [f"output_{i}" for i in range(len(result))]
        values = list(result)
    else:
        output_names, values = ["output"], [result]
    for name, value in zip(output_names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise SaveError(
                f"the model returns {type(value).__name__} for {name!r}; ferry serves "
                "models that return tensors (one, a tuple, or a dict of them)"
            )
    return Signature(
        {n: _batch_spec(torch, n, t) for n, t in zip(names, args, strict=True)},
        {n: _batch_spec(torch, n, t) for n, t in zip(output_names, values, strict=True)},
    )


def _batch_spec(torch: Any, name: str, tensor: Any) -> TensorSpec:
    try:
        dtype = numpy_dtype_of(torch, tensor.dtype)
    except ValueError as exc:
        raise SaveError(f"tensor {name!r}: {exc}") from None
    if tensor.dim() == 0:
        raise SaveError(f"tensor {name!r} is a scalar; ferry needs a batch dimension")
    return TensorSpec(name, dtype, (-1, *tensor.shape[1:]))


def _exportable(torch: Any, model: Any) -> Any:
    """A copy of a TorchScript module for torch.onnx, which alters the module it exports
    (it then fails under inference mode); the caller's module stays as it was."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model
    buffer = io.BytesIO()
    torch.jit.save(model, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer).eval()


def _save_torchscript(torch: Any, model: Any, args: tuple[Any, ...], folder: Path) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        model.save(str(folder / TORCHSCRIPT_FILE))
        return
    try:
        with warnings.catch_warnings():
            # TracerWarning: shape-dependent Python; DeprecationWarning: TorchScript is
            # deprecated in torch 2.13, but it is still the format every libtorch reads.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, args, strict=False)
    except Exception as exc:
        raise SaveError(
            f"torch.jit.trace failed ({type(exc).__name__}: {exc}); try format export, "
            "or save a torch.jit.script()ed module"
        ) from exc
    traced.save(str(folder / TORCHSCRIPT_FILE))


def _save_exported(torch: Any, model: Any, args: tuple[Any, ...], folder: Path) -> None:
    """Export with dimension 0 of every input dynamic. An example batch of 1 is repeated
    to 2 rows, because export specialises size-1 dimensions to 1."""
    args = tuple(a.repeat(2, *([1] * (a.dim() - 1))) if a.shape[0] == 1 else a for a in args)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in args)
    try:
        program = torch.export.export(model, args, dynamic_shapes=dynamic)
    except Exception as exc:
        raise SaveError(
            f"torch.export failed with a dynamic batch dimension ({type(exc).__name__}: {exc})"
        ) from exc
    torch.export.save(program, str(folder / EXPORTED_FILE))


SAVERS: list[Saver] = [TorchSaver()]
