"""Compare ASGI/RSGI server stacks on ferry's predict workload with wrk.

Why: ferry's README has to justify its HTTP stack with numbers measured on the
real hot path (orjson decode -> numpy float32 -> tiny matmul -> orjson encode),
not with hello-world benchmarks.

Each configuration is one server process on 127.0.0.1 serving an app from
``apps.py``. For every connection count we run a 2 s wrk warm-up then an 8 s
measured run (``wrk -t1 --latency``) with a Lua script that POSTs a ~8.6 KB
``{"instances": [[784 floats]]}`` body. Rounds are interleaved (all configs,
then all configs again) so slow drift on the machine does not favour one stack.

Usage::

    .venv/bin/python benchmarks/http_stack/run.py [--rounds 2] [--only granian]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import apps  # noqa: E402

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stack:
    """One server configuration: a label plus how to launch it on a port."""

    name: str
    argv: tuple[str, ...]

    def command(self, port: int) -> list[str]:
        """Full argv for this stack listening on ``port``."""
        return [sys.executable, *self.argv, "--host", HOST, "--port", str(port)]


def _uvicorn(app: str, loop: str, http: str) -> tuple[str, ...]:
    return (
        "-m", "uvicorn", f"apps:{app}", "--app-dir", str(HERE),
        "--loop", loop, "--http", http, "--workers", "1",
        "--log-level", "warning", "--no-access-log",
    )  # fmt: skip


def _granian(app: str, interface: str, *extra: str) -> tuple[str, ...]:
    return (
        "-m", "granian", f"apps:{app}", "--working-dir", str(HERE),
        "--interface", interface, "--workers", "1",
        "--log-level", "warning", "--no-ws", *extra,
    )  # fmt: skip


def _h11_available() -> bool:
    try:
        import h11  # noqa: F401
    except ImportError:
        return False
    return True


def all_stacks() -> list[Stack]:
    """The configurations under test (h11 one only if h11 is installed)."""
    stacks = [
        Stack("uvicorn uvloop+httptools, raw ASGI", _uvicorn("raw_asgi", "uvloop", "httptools")),
        Stack(
            "uvicorn uvloop+httptools, Starlette",
            _uvicorn("starlette_app", "uvloop", "httptools"),
        ),
    ]
    if _h11_available():
        stacks.append(
            Stack("uvicorn asyncio+h11, Starlette", _uvicorn("starlette_app", "asyncio", "h11"))
        )
    stacks += [
        # granian's default --loop is "auto", which resolves to uvloop when installed.
        Stack("granian asgi (loop auto=uvloop), Starlette", _granian("starlette_app", "asgi")),
        Stack(
            "granian asgi --loop asyncio, Starlette",
            _granian("starlette_app", "asgi", "--loop", "asyncio"),
        ),
        Stack("granian rsgi (loop auto=uvloop), raw RSGI", _granian("raw_rsgi", "rsgi")),
    ]
    return stacks


# ------------------------------------------------------------------ payload / wrk


def make_body(seed: int = 1) -> bytes:
    """Deterministic MNIST-like request: 784 values in [0, 1) with 8 decimals (~8.6 KB)."""
    pixels = np.round(np.random.default_rng(seed).random(apps.N_FEATURES), 8)
    return orjson.dumps({"instances": [pixels.tolist()]})


def write_lua(body: bytes, directory: Path) -> Path:
    """wrk script that POSTs ``body`` as JSON on every request."""
    script = directory / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )
    return script


@dataclass(frozen=True)
class WrkResult:
    """Parsed wrk output for one measured run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # CPU cores used by the server process tree during the run


_UNIT_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_TO_MS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Extract req/s, p50, p99 (ms) and error count from ``wrk --latency`` text."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, errors


def run_wrk(wrk: str, script: Path, port: int, conns: int, seconds: int) -> str:
    """Run wrk once (bounded by a hard subprocess timeout) and return its stdout."""
    cmd = [
        wrk, "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "--latency",
        "-s", str(script), f"http://{HOST}:{port}{apps.PREDICT_PATH}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20, check=True)
    return proc.stdout


# ----------------------------------------------------------------- process control


def free_port() -> int:
    """Ask the kernel for an unused loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _descendants(root: int) -> list[int]:
    """PIDs of ``root`` and all its descendants (granian forks a worker process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """User+system CPU seconds consumed so far by ``root``'s process tree."""
    total = 0
    for pid in _descendants(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def _probe(port: int, body: bytes) -> bytes | None:
    """One POST; returns the response body on HTTP 200, else None."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request(
            "POST", apps.PREDICT_PATH, body=body, headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        data = resp.read()
        return data if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def serve(stack: Stack, body: bytes) -> Iterator[tuple[int, int]]:
    """Start ``stack`` on a free port, wait until it answers correctly, stop it after.

    Yields ``(port, pid)``. Runs the server in its own session so that, as a last
    resort, its process group (only processes we spawned) can be SIGKILLed.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            stack.command(port), cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            _wait_ready(stack, proc, port, body, log)
            yield port, proc.pid
        finally:
            stop(proc)


def _wait_ready(
    stack: Stack, proc: subprocess.Popen[bytes], port: int, body: bytes, log: IO[bytes]
) -> None:
    """Poll until the server returns correct predictions (bounded by STARTUP_TIMEOUT_S)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while (reply := _probe(port, body)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"{stack.name} failed to start:\n{log.read().decode()}")
        time.sleep(0.1)
    expected = np.asarray(orjson.loads(body)["instances"], np.float32) @ apps.WEIGHTS
    got = np.asarray(orjson.loads(reply)["predictions"], np.float32)
    if not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"{stack.name} returned wrong predictions")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server we started, then SIGKILL its process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
    # granian's worker is a child process: make sure none of the group survives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------------- driver


def bench_stack(
    stack: Stack, body: bytes, script: Path, wrk: str, args: argparse.Namespace
) -> dict[int, WrkResult]:
    """Benchmark one stack at every connection count (fresh server per round)."""
    results: dict[int, WrkResult] = {}
    with serve(stack, body) as (port, pid):
        for conns in args.conns:
            run_wrk(wrk, script, port, conns, args.warmup)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            out = run_wrk(wrk, script, port, conns, args.duration)
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            rps, p50, p99, errors = parse_wrk(out)
            results[conns] = WrkResult(rps, p50, p99, errors, cpu)
            print(
                f"  {stack.name:<44} c={conns:<3} {rps:>9.0f} req/s  p50 {p50:6.2f} ms"
                f"  p99 {p99:6.2f} ms  cpu {cpu:4.2f}  err {errors}",
                file=sys.stderr,
                flush=True,
            )
    return results


def render(
    stacks: Sequence[Stack], conns_list: Sequence[int], runs: list[dict[str, dict[int, WrkResult]]]
) -> str:
    """Markdown table; each cell lists the value from every round, ``run1 / run2``."""

    def cell(name: str, conns: int, fmt: str, attr: str) -> str:
        return " / ".join(fmt.format(getattr(r[name][conns], attr)) for r in runs)

    lines = [
        "| stack | conns | req/s | p50 ms | p99 ms | server CPU (cores) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for stack in stacks:
        for conns in conns_list:
            lines.append(
                f"| {stack.name} | {conns} | {cell(stack.name, conns, '{:.0f}', 'rps')} "
                f"| {cell(stack.name, conns, '{:.2f}', 'p50_ms')} "
                f"| {cell(stack.name, conns, '{:.2f}', 'p99_ms')} "
                f"| {cell(stack.name, conns, '{:.2f}', 'server_cpu')} "
                f"| {cell(stack.name, conns, '{:d}', 'errors')} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, run every stack for every round, print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="repeats per config (noise)")
    parser.add_argument("--conns", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--duration", type=int, default=8, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run")
    parser.add_argument("--only", default="", help="substring filter on stack names")
    args = parser.parse_args(argv)

    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found on PATH", file=sys.stderr)
        return 2
    stacks = [s for s in all_stacks() if args.only in s.name]
    body = make_body()
    print(f"body: {len(body)} bytes, {os.cpu_count()} CPUs", file=sys.stderr)

    runs: list[dict[str, dict[int, WrkResult]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = write_lua(body, Path(tmp))
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", file=sys.stderr, flush=True)
            runs.append({s.name: bench_stack(s, body, script, wrk, args) for s in stacks})
    print(render(stacks, args.conns, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
