"""A real `ferry serve` process on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this test run handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the first
    socket is closed, so a server's REST and gRPC ports (two calls) could coincide and the
    server would fail to bind its second port; remembering what was handed out rules that
    out within one run."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class FerryProcess:
    """`ferry serve ARGS` as a child process, with its log in `log_path`."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        port_env: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        python: Path | None = None,
    ) -> None:
        """`port_env`: pass the port in this environment variable instead of as
        `--rest_api_port` (SageMaker's SAGEMAKER_BIND_TO_PORT). `preexec_fn` runs in the
        child before ferry starts (e.g. to lower its resource limits). `python`: the
        interpreter whose ferry runs (default: this one; a fresh venv's for install tests)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Every server gets its own gRPC port (the default 8500 would collide), unless the
        # test chose one with `--port`.
        self.grpc_port = int(args[args.index("--port") + 1]) if "--port" in args else free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        command = [
            str(python or sys.executable),
            "-m",
            "ferry.cli",
            "serve",
            *args,
            "--host",
            "127.0.0.1",
        ]
        if "--port" not in args:
            command += ["--port", str(self.grpc_port)]
        port_setting = {port_env: str(self.port)} if port_env else {}
        if not port_env:
            command += ["--rest_api_port", str(self.port)]
        full_env = {**os.environ, **(env or {}), **port_setting}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
        self.session = requests.Session()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> FerryProcess:
        """Wait until the server has loaded its first scan of storage: ready, or started
        with models that do not serve (a 503 in phase "models", ferry.readiness), which
        tests of broken and empty folders start on purpose."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"ferry exited early:\n{self.log()}")
            answer = self.session.get(f"{self.url}/v2/health/ready", timeout=2)
            return answer.status_code == 200 or answer.headers.get("ferry-readiness") == "models"

        wait_until(ready, timeout, message="server readiness")
        return self

    def wait_version(self, model: str, version: int, timeout: float = 30.0) -> None:
        """Wait until `version` of `model` is AVAILABLE."""

        def available() -> bool:
            response = self.get(f"/v1/models/{model}/versions/{version}")
            if response.status_code != 200:
                return False
            return response.json()["model_version_status"][0]["state"] == "AVAILABLE"

        wait_until(available, timeout, message=f"{model} version {version} AVAILABLE")

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.session.post(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def predict(self, model: str, body: dict, suffix: str = "") -> requests.Response:
        return self.post(f"/v1/models/{model}{suffix}:predict", json=body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.session.close()
        self._log.close()
        return self.process.returncode
