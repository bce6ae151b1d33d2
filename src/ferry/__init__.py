"""ferry: a model-serving system that speaks TensorFlow Serving's APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "RetryPolicy"]

if TYPE_CHECKING:
    from ferry.client import Client, RetryPolicy


def __getattr__(name: str) -> Any:
    # `import ferry` stays light (the server's command-line start-up, tools that only
    # read __version__); the client and its numpy/orjson imports load on first use.
    if name in __all__:
        from ferry import client

        return getattr(client, name)
    raise AttributeError(f"module 'ferry' has no attribute {name!r}")
