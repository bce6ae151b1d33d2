"""Importing a framework that is an optional extra of ferry.

TensorFlow, LiteRT, PyTorch and scikit-learn are large and most deployments need one
of them at most, so they are extras (`pip install 'ferry-serve[tensorflow]'`). Runtimes
import their framework in `load()` through `import_framework`, never at module level:
`import ferry.runtimes` stays light, and a model whose framework is missing fails its
own load with a message that names the extra, while every other model keeps serving.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from types import ModuleType

from ferry.distribution import install_hint

log = logging.getLogger(__name__)

# Modules that import TensorFlow when imported.
_TENSORFLOW_ROOTS = frozenset({"tensorflow", "keras", "tf2onnx", "tensorflow_serving"})
# Installed modules that must be imported before TensorFlow. triton (the GPU compiler that
# PyPI's CUDA build of PyTorch depends on) carries its own LLVM: imported after
# TensorFlow, it kills the process with a segfault (seen with tensorflow 2.21 and triton
# 3.7; the other order works). PyTorch imports it lazily (torch.export, torch._dynamo),
# so a server with a TensorFlow model loaded would crash on its first torch.export model.
_BEFORE_TENSORFLOW = ("triton",)


class MissingExtra(ImportError):
    """A model needs a framework that is not installed; the message says what to install."""


def import_framework(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install 'ferry-serve[extra]'`.

    `what` names the kind of model that needs it ("TensorFlow SavedModel"), so the load
    error in the model's status reads as an instruction rather than a stack trace.
    """
    if module.split(".")[0] in _TENSORFLOW_ROOTS:
        prepare_tensorflow_import()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{what} models need the Python package '{module.split('.')[0]}', which cannot "
            f"be imported ({exc}); install it with: {install_hint(extra)}"
        ) from exc


def prepare_tensorflow_import() -> None:
    """Import what must precede TensorFlow (see `_BEFORE_TENSORFLOW`), if installed.

    Call before anything that imports TensorFlow; a no-op once TensorFlow is imported
    (too late then) or where those modules are absent.
    """
    if "tensorflow" in sys.modules:
        return
    for name in _BEFORE_TENSORFLOW:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional install must not stop TensorFlow
            log.debug("could not import %s before TensorFlow: %s", name, exc)
