"""A spinner on stderr for the CLI's slow steps (a TensorFlow import and conversion in
`ferry save` and `ferry lite` take 15-40 s), shown only when stderr is a terminal so
logs and pipes get no control characters."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def working(description: str) -> Iterator[None]:
    """Show `description` with a spinner while the block runs; nothing off a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(description, spinner="dots"):
        yield
