"""Turn one run's measurements into the markdown report (tables, target ratios, notes).

Why separate from run.py: the targets are the point of the benchmark, and keeping their
arithmetic in small pure functions makes it easy to check what "ferry over FastAPI"
means exactly (same model, same connection count, same run) without reading the
process juggling.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from ceiling import CeilingResult
from loadgen import LoadResult, h2load_version, wrk_version

PROTOCOL_LABELS = {"rest": "TF REST JSON", "grpc": "TF gRPC", "v2bin": "V2 REST binary"}


@dataclass
class HttpResult:
    """One (model, server, protocol, clients) measurement, or why it is missing.

    `connections` is the number of concurrent clients: wrk connections, or h2load
    connections x streams per connection. `server_cores` and `other_cores` are average
    cores busy during the measured window: the server process itself, and everything
    on the machine that is neither the server nor the load generator (other servers
    idling, other people's jobs: noise). `server_errors` are ferry's own request
    outcomes other than OK in the window (the only place a failed gRPC call shows);
    `unconfirmed` are responses the load generator received beyond ferry's OK count (a
    failure that never reached ferry's metrics, such as an unparseable request);
    `cancelled` are requests the load generator abandoned when its time was up."""

    model: str
    server: str
    connections: int
    protocol: str = "rest"
    load: LoadResult | None = None
    failure: str | None = None
    server_cores: float | None = None
    other_cores: float | None = None
    mean_batch: float | None = None
    server_errors: dict[str, int] = field(default_factory=dict)
    unconfirmed: int = 0
    cancelled: int = 0

    @property
    def errors(self) -> int:
        """Socket errors plus failed responses (0 when nothing ran).

        HTTP statuses >= 400, ferry's non-OK outcomes and `unconfirmed` each count
        failed responses from one vantage point, and one failure can show in several
        (a REST 400 is also an INVALID_ARGUMENT outcome), so the largest is taken
        rather than the sum: each is a lower bound of the failures."""
        if self.load is None:
            return 0
        failed = max(self.load.status_errors, sum(self.server_errors.values()), self.unconfirmed)
        return self.load.socket_errors + failed


@dataclass
class Target:
    """One target ratio; `value` None when this run did not measure its inputs."""

    label: str
    value: float | None
    goal: str
    check: Callable[[float], bool]
    digits: int = 2

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        return "PASS" if self.check(self.value) else "FAIL"


@dataclass
class Report:
    """Everything a run produced, ready to render."""

    settings: list[tuple[str, str]]
    ceilings: list[CeilingResult]
    http: list[HttpResult]
    notes: list[str] = field(default_factory=list)
    # Taken when the run starts, so the load average shows the machine before we loaded it.
    machine: list[tuple[str, str]] = field(default_factory=lambda: machine_description())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_description() -> list[tuple[str, str]]:
    """CPU, cores, OS and the versions that decide the numbers."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = load_average()
    return [
        ("CPU", _cpu_model()),
        ("cores", f"{os.cpu_count()} logical ({usable} usable by this process)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("onnxruntime", _version("onnxruntime")),
        ("numpy", _version("numpy")),
        ("ferry", _version("ferry-serve")),
        ("fastapi / pydantic / uvicorn", "{} / {} / {}".format(
            _version("fastapi"), _version("pydantic"), _version("uvicorn"))),
        ("wrk", wrk_version()),
        ("h2load", h2load_version()),
        ("load average at start (1/5/15 min)", load),
    ]  # fmt: skip


def _find(
    results: Sequence[HttpResult], model: str, server: str, conns: int, protocol: str = "rest"
) -> LoadResult | None:
    for r in results:
        if (r.model, r.server, r.connections, r.protocol) == (model, server, conns, protocol):
            return r.load
    return None


def _ceiling(ceilings: Sequence[CeilingResult], model: str, batch: int) -> float | None:
    for c in ceilings:
        if (c.model, c.batch) == (model, batch):
            return c.samples_per_s
    return None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def targets(report: Report) -> list[Target]:
    """The benchmark's goals, computed only from this run's numbers."""
    http, ceilings = report.http, report.ceilings

    def rps(model: str, server: str, conns: int, protocol: str = "rest") -> float | None:
        found = _find(http, model, server, conns, protocol)
        return found.requests_per_s if found else None

    def p50(model: str, server: str) -> float | None:
        found = _find(http, model, server, 1)
        return found.p50_ms if found else None

    errors = sum(r.errors for r in http) + sum(1 for r in http if r.failure)
    return [
        Target(
            "mlp_large c64: ferry TF REST JSON req/s / in-process batch-64 samples/s",
            _ratio(rps("mlp_large", "ferry", 64), _ceiling(ceilings, "mlp_large", 64)),
            ">= 0.50",
            lambda v: v >= 0.50,
        ),
        Target(
            "mlp_small c64: ferry TF REST JSON req/s / FastAPI req/s",
            _ratio(rps("mlp_small", "ferry", 64), rps("mlp_small", "fastapi", 64)),
            ">= 2.0",
            lambda v: v >= 2.0,
        ),
        Target(
            "mlp_small c1: ferry p50 / FastAPI p50",
            _ratio(p50("mlp_small", "ferry"), p50("mlp_small", "fastapi")),
            "<= 1.25",
            lambda v: v <= 1.25,
        ),
        Target(
            "mlp_large c1: ferry p50 / FastAPI p50",
            _ratio(p50("mlp_large", "ferry"), p50("mlp_large", "fastapi")),
            "<= 1.25",
            lambda v: v <= 1.25,
        ),
        Target(
            "mlp_large c64: ferry TF gRPC req/s / in-process batch-64 samples/s",
            _ratio(rps("mlp_large", "ferry", 64, "grpc"), _ceiling(ceilings, "mlp_large", 64)),
            ">= 0.60",
            lambda v: v >= 0.60,
        ),
        Target(
            "mlp_small c64: ferry TF gRPC req/s / ferry TF REST JSON req/s",
            _ratio(rps("mlp_small", "ferry", 64, "grpc"), rps("mlp_small", "ferry", 64)),
            ">= 1.5",
            lambda v: v >= 1.5,
        ),
        errors_target(errors, bool(http)),
    ]


def errors_target(errors: int, measured: bool) -> Target:
    """The target every benchmark has: no errors in any run (None when nothing ran)."""
    return Target(
        "errors (all runs; a failed run counts as one)",
        float(errors) if measured else None,
        "== 0",
        lambda v: v == 0,
        digits=0,
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _errors(r: HttpResult) -> str:
    """The errors cell: the total, then where they came from when there are any."""
    if not r.errors or r.load is None:
        return str(r.errors)
    parts = []
    if r.load.socket_errors:
        parts.append(f"{r.load.socket_errors} socket")
    if r.load.status_errors:
        parts.append(f"{r.load.status_errors} HTTP")
    parts += [f"{n} {outcome}" for outcome, n in sorted(r.server_errors.items())]
    if r.unconfirmed:
        parts.append(f"{r.unconfirmed} not OK in ferry's count")
    return f"{r.errors} ({', '.join(parts)})"


def render(report: Report, title: str) -> str:
    """The whole report as markdown."""
    out = [f"# {title}", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in report.machine]
    out.append(f"- load average at end (1/5/15 min): {load_average()}")
    out += ["", "## Settings", ""]
    out += [f"- {k}: {v}" for k, v in report.settings]

    out += ["", "## In-process onnxruntime ceiling (no HTTP)", ""]
    out += ["| model | batch | runs/s | samples/s | p50 ms per run |", "|---|---:|---:|---:|---:|"]
    for c in report.ceilings:
        out.append(
            f"| {c.model} | {c.batch} | {fmt(c.runs_per_s)} | {fmt(c.samples_per_s)} "
            f"| {fmt(c.p50_run_ms, 3)} |"
        )
    if not report.ceilings:
        out.append("| (not measured) | | | | |")

    out += ["", "## Servers under load (one instance per request)", ""]
    out += [
        "clients: concurrent requests, each waiting for its answer before sending the next "
        "(wrk connections; h2load connections x streams). errors: socket errors plus failed "
        "responses, the largest of HTTP >= 400, ferry's non-OK request outcomes in the "
        "window, and responses beyond ferry's OK count.",
        "",
        "| model | server | protocol | clients | req/s | p50 ms | p99 ms | errors "
        "| max ms | server CPU (cores) | load gen CPU (cores) | other CPU (cores) | mean batch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.http:
        head = f"| {r.model} | {r.server} | {PROTOCOL_LABELS.get(r.protocol, r.protocol)} "
        head += f"| {r.connections} "
        if r.load is None:
            out.append(f"{head}| FAILED: {r.failure} | | | | | | | | |")
            continue
        w = r.load
        out.append(
            f"{head}| {fmt(w.requests_per_s)} | {fmt(w.p50_ms, 2)} | {fmt(w.p99_ms, 2)} "
            f"| {_errors(r)} | {fmt(w.max_ms, 1)} | {fmt(r.server_cores, 2)} "
            f"| {fmt(w.client_cpu_s / w.duration_s if w.duration_s else None, 2)} "
            f"| {fmt(r.other_cores, 2)} | {fmt(r.mean_batch, 1)} |"
        )

    out += ["", "## Targets (from this run)", ""]
    out += ["| target | value | goal | status |", "|---|---:|---|---|"]
    for t in targets(report):
        value = "-" if t.value is None else f"{t.value:.{t.digits}f}"
        out.append(f"| {t.label} | {value} | {t.goal} | {t.status} |")

    if report.notes:
        out += ["", "## Notes", ""]
        out += [f"- {note}" for note in report.notes]
    return "\n".join(out) + "\n"
