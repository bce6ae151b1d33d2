"""Importing a framework that is an optional extra of ferry.

TensorFlow, LiteRT, PyTorch and scikit-learn are large and most deployments need one
of them at most, so they are extras (`pip install 'ferry[tensorflow]'`). Runtimes
import their framework in `load()` through `import_framework`, never at module level:
`import ferry.runtimes` stays light, and a model whose framework is missing fails its
own load with a message that names the extra, while every other model keeps serving.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A model needs a framework that is not installed; the message says what to install."""


def import_framework(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install 'ferry[extra]'`.

    `what` names the kind of model that needs it ("TensorFlow SavedModel"), so the load
    error in the model's status reads as an instruction rather than a stack trace.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{what} models need the Python package '{module.split('.')[0]}', which cannot "
            f"be imported ({exc}); install it with: pip install 'ferry[{extra}]'"
        ) from exc
