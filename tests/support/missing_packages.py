"""Python packages made absent for one child process, as a machine without them has.

Each named package gets a stub first on the child's PYTHONPATH whose import raises what
a missing package raises (ModuleNotFoundError naming it), so the child takes the same
path as on a machine where the package was never installed. The test process itself is
untouched."""

from __future__ import annotations

import os
from pathlib import Path


def without_packages(folder: Path, *names: str) -> dict[str, str]:
    """Environment entries for a child in which `names` cannot be imported."""
    for name in names:
        package = folder / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH", "")])]
    return {"PYTHONPATH": os.pathsep.join(path)}
