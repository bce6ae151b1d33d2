"""Fresh virtual environments for install tests: where pip finds packages."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path


def package_source(override_env: str = "FERRY_EDGE_TEST_PIP_ARGS") -> list[str]:
    """pip arguments for installing packages into a fresh venv: the `override_env`
    variable's; else, where pip is configured with file:// indexes or find-links folders
    that hold wheels, those alone (no network needed); else none, so pip uses its
    configured package index. (An empty find-links folder, as some machines configure,
    is no source: preferring it would make pip find nothing.)"""
    if os.environ.get(override_env):
        return shlex.split(os.environ[override_env])
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    indexes, links = [], []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        for item in value.strip("'\"").split():
            if key.endswith("index-url") and item.startswith("file://"):
                indexes.append(item)
            elif key.endswith("find-links") and any(Path(item).glob("*.whl")):
                links.append(item)
    if not indexes and not links:
        return []
    args = ["--index-url", indexes[0]] if indexes else ["--no-index"]
    for extra in indexes[1:]:
        args += ["--extra-index-url", extra]
    for link in links:
        args += ["--find-links", link]
    return args
