"""Start, probe and stop the servers under test, and account for the CPU they use.

Why a module of its own: every server is a child process that must be stopped on every
exit path (a failed probe, Ctrl-C, SIGTERM), and only by its own PID, since other
people's processes share this machine. `running_server` is a context manager for that;
each wait in here is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 90.0  # mlp_large loads ~100 MB of weights and ferry warms it up
STOP_TIMEOUT_S = 20.0  # ferry drains and unloads models after SIGTERM
PROBE_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A started server process and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int | None = None  # ferry's gRPC port; the baseline has none

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, model: str) -> str:
        return f"http://{HOST}:{self.port}/v1/models/{model}:predict"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ServerError(RuntimeError):
    """A server exited early or never answered."""


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST on a fresh connection; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a fresh connection; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_serving(server: Server, probes: dict[str, bytes], timeout_s: float) -> None:
    """Poll until every model in `probes` answers its predict body with 200.

    Readiness is checked with a real predict rather than a health route, so both
    servers are judged the same way and a "ready" model is known to compute."""
    deadline = time.monotonic() + timeout_s
    pending = dict(probes)
    last = ""
    while pending:
        if server.process.poll() is not None:
            raise ServerError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ServerError(
                f"{server.name} not serving {sorted(pending)} after {timeout_s:.0f} s "
                f"(last: {last}):\n{server.log_tail()}"
            )
        for model, body in list(pending.items()):
            try:
                status, payload = post(server.port, f"/v1/models/{model}:predict", body)
            except OSError as exc:
                last = repr(exc)
                continue
            if status == 200:
                del pending[model]
            else:
                last = f"{model}: HTTP {status} {payload[:200]!r}"
        if pending:
            time.sleep(0.25)


def wait_until_listening(server: Server, timeout_s: float) -> None:
    """Poll until the server accepts TCP connections on its port (servers that speak no
    HTTP/1.1, such as a bare gRPC server)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise ServerError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 0.5):
            return
        if time.monotonic() > deadline:
            raise ServerError(f"{server.name} not listening after {timeout_s:.0f} s")
        time.sleep(0.1)


def stop(server: Server) -> int | None:
    """SIGTERM the server's own PID, wait for it, SIGKILL it if it will not go."""
    process = server.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
    return process.returncode


@contextlib.contextmanager
def running_server(
    name: str,
    argv: Sequence[str],
    port: int,
    log_path: Path,
    probes: dict[str, bytes] | None,
    env: dict[str, str] | None = None,
    grpc_port: int | None = None,
) -> Iterator[Server]:
    """Start `argv`, wait until it serves every probe (None: until `port` listens),
    yield it, and always stop it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    server = Server(name, process, port, log_path, grpc_port)
    try:
        if probes is None:
            wait_until_listening(server, STARTUP_TIMEOUT_S)
        else:
            wait_until_serving(server, probes, STARTUP_TIMEOUT_S)
        yield server
    finally:
        stop(server)


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one instant, in core-seconds."""

    machine_busy: float
    server: float


def cpu_sample(server: Server) -> CpuSample:
    """Machine-wide busy time (all processes) and the server process's own CPU time."""
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    busy = sum(machine) - idle
    try:
        times = psutil.Process(server.pid).cpu_times()
        own = times.user + times.system
    except psutil.Error:
        own = 0.0
    return CpuSample(busy, own)


_SAMPLE_LINE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(?P<key>[a-z_]+)="(?P<value>[^"]*)"')


@dataclass(frozen=True)
class FerrySnapshot:
    """ferry's counters for one model at one instant, from its Prometheus page.

    Differences of two snapshots give a measured window's mean batch size (`rows` /
    `runs`, summed over versions) and its request outcomes for one API label
    (`outcomes`, e.g. {"OK": 10233.0, "CANCELLED": 2.0}), which is how gRPC errors are
    counted: h2load sees only HTTP 200 and cannot tell a failed call."""

    rows: float
    runs: float
    outcomes: dict[str, float]


def ferry_snapshot(server: Server, model: str, api: str) -> FerrySnapshot | None:
    """ferry's batch and request counters for `model` (requests of API `api` only), or
    None when the metrics page cannot be read."""
    try:
        status, body = get(server.port, "/monitoring/prometheus/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    rows = runs = 0.0
    outcomes: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        match = _SAMPLE_LINE.match(line)
        if not match:
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"])}
        if labels.get("model") != model:
            continue
        if match["name"] == "ferry_batch_size_rows_sum":
            rows += float(match["value"])
        elif match["name"] == "ferry_batch_size_rows_count":
            runs += float(match["value"])
        elif match["name"] == "ferry_requests_total" and labels.get("api") == api:
            outcome = labels.get("outcome", "?")
            outcomes[outcome] = outcomes.get(outcome, 0.0) + float(match["value"])
    return FerrySnapshot(rows, runs, outcomes)
