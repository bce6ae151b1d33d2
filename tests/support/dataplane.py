"""Which REST fronts a test can start here: the Python front always, the Rust front where
`make` built ferry._dataplane (it needs cargo)."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from typing import Any

import pytest


def rust_front_or_skip() -> None:
    """Skip when this machine cannot build the Rust front; fail when it could but did not."""
    try:
        importlib.import_module("ferry._dataplane")
    except ImportError:
        if shutil.which("cargo"):
            pytest.fail("cargo is on PATH but ferry._dataplane is not built: run `make test`")
        pytest.skip("no cargo here: the Rust front is not built (ferry serves with Python)")


def extension_function(name: str) -> Callable[..., Any]:
    """A function of the Rust extension (its codecs and checks on their own, for the
    equivalence tests), with `rust_front_or_skip`'s rule where it is not built."""
    rust_front_or_skip()
    return getattr(importlib.import_module("ferry._dataplane"), name)
