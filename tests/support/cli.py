"""The `ferry` command as a child process, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_ferry(
    *args: str,
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`ferry ARGS` (this interpreter's ferry), its output captured; bounded by `timeout`.
    `env` adds variables to this process's; a None value removes one."""
    child_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args],
        capture_output=True,
        text=True,
        env={key: value for key, value in child_env.items() if value is not None},
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def last_line(text: str) -> str:
    """The last non-empty line (where `Error: ...` is printed)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
