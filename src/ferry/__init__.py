"""ferry: a model-serving system that speaks TensorFlow Serving's APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "RetryPolicy", "save"]

if TYPE_CHECKING:
    from ferry.client import Client, RetryPolicy
    from ferry.convert.save import save

# Public names and the module each lives in, imported on first use.
_LAZY = {"Client": "ferry.client", "RetryPolicy": "ferry.client", "save": "ferry.convert.save"}


def __getattr__(name: str) -> Any:
    # `import ferry` stays light (the server's command-line start-up, tools that only
    # read __version__); the client, `save` and their imports load on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferry' has no attribute {name!r}")
