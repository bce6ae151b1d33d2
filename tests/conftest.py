"""Shared fixtures: a model repository folder and real ferry server processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.server import FerryProcess

from ferry.runtimes.optional import prepare_tensorflow_import

# Test modules import TensorFlow and PyTorch in one process; what must come before
# TensorFlow comes now, before any of them is collected.
prepare_tensorflow_import()

StartServer = Callable[..., FerryProcess]


@pytest.fixture
def model_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start `ferry serve` with the given arguments; every server is stopped at teardown."""
    servers: list[FerryProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        cwd: Path | None = None,
        port_env: str | None = None,
    ) -> FerryProcess:
        log_path = tmp_path / f"ferry-{len(servers)}.log"
        server = FerryProcess(list(args), log_path, env=env, cwd=cwd, port_env=port_env)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        server.stop()
