"""Deploy benchmark: cold start from object storage, and the per-request cost of `--auth`.

1. Cold start: `ferry serve s3://bucket/models` against moto's S3 server (server mode,
   in its own process on 127.0.0.1, so neither ferry nor the boto3 baseline shares a GIL
   with it). For each new version of `mlp_large` (about 100 MB) the clock starts when
   the upload of its object completes and stops at the first HTTP 200 from
   `/v1/models/mlp_large/versions/N:predict`. Against it, in the same run and from the
   same store: a plain boto3 `download_file` of the same object plus the in-process load
   (onnxruntime.InferenceSession creation and its first run). ferry only looks every
   `--file_system_poll_wait_seconds` (1 s here) unless the bucket's S3 events reach it
   through SQS (`--s3_event_queue_url`, mode "events", the same run with a second
   server), so the figure is also given from the start of ferry's download (read from
   its log), without that wait. The settle check runs during the download.

2. Auth: c64 wrk throughput of mlp_small against ferry without `--auth` and with it, on
   TF REST JSON and on the SageMaker runtime API (`/endpoints/mlp-small/invocations`,
   what boto3's `sagemaker-runtime` signs; the same JSON body), the same signed request
   (`ferry.auth.sigv4.sign_headers`, re-signed before every run, well inside the
   5-minute window) or bearer token replayed by wrk. ferry's
   own metrics confirm that every request was accepted: `ferry_auth_refused_total` and
   non-OK `ferry_requests_total` must not grow, and `ferry_auth_checks_total` must grow
   by about the request count.

Usage::

    .venv/bin/python benchmarks/deploy.py            # 3 versions, 3 rounds of 10 s
    .venv/bin/python benchmarks/deploy.py --quick

The report is printed and written to benchmarks/results/deploy.md (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import boto3  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import psutil  # noqa: E402
from botocore.config import Config  # noqa: E402
from loadgen import LoadError, LoadResult, instance_values, predict_body, run_wrk, write_script  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from report import load_average, machine_description  # noqa: E402
from servers import HOST, Server, ServerError, cpu_sample, free_port, running_server  # noqa: E402

from ferry.auth.sigv4 import sign_headers  # noqa: E402
from ferry.examples import mlp_large, write_version  # noqa: E402

DEFAULT_OUTPUT = HERE / "results" / "deploy.md"
BUCKET = "ferry-bench"
PREFIX = "models"
LARGE, SMALL = "mlp_large", "mlp_small"
WIDTH = {SMALL: 784, LARGE: 1024}
POLL_S = 1.0
SETTLE_S = 0.5  # ferry's default --version_settle_seconds
COLD_MODES = ("poll", "events")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
COLD_START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
# ferry's log line format: "%(asctime)s %(levelname)s %(name)s: %(message)s".
_LOG_TIME = r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM becomes SystemExit, so every `finally` stops the processes we started."""
    raise SystemExit(128 + signum)


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes]:
    """One request with `headers` on a fresh connection; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metrics(port: int, headers: dict[str, str]) -> dict[tuple[str, tuple], float]:
    """Every sample of ferry's Prometheus page: (name, sorted labels) -> value."""
    status, body = request(port, "GET", "/monitoring/prometheus/metrics", headers=headers)
    if status != 200:
        raise ServerError(f"metrics page: HTTP {status} {body[:200]!r}")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> dict[tuple, float]:
    """Growth of every sample `name` whose labels include `labels`, by label set."""
    grown = {}
    for (sample, label_set), value in after.items():
        if sample != name or any(dict(label_set).get(k) != v for k, v in labels.items()):
            continue
        change = value - before.get((sample, label_set), 0.0)
        if change:
            grown[label_set] = change
    return grown


def process_cpu(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# -- cold start from S3 -------------------------------------------------------------------


@dataclass
class ColdStart:
    """One new version: ferry's times (seconds) and the baseline's, from the same run."""

    version: int
    mode: str  # "poll" or "events" (--s3_event_queue_url)
    upload_s: float
    ferry_total_s: float  # upload complete -> first 200 from that version
    poll_wait_s: float | None  # upload complete -> ferry starts downloading (from its log)
    ferry_download_s: float | None  # ferry's own "downloaded ... in Xs"
    ferry_load_s: float | None  # ferry's "AVAILABLE (..., Xs)": load + warm-up
    baseline_download_s: float = 0.0
    baseline_load_s: float = 0.0
    other_cores: float | None = None

    @property
    def ferry_active_s(self) -> float | None:
        """From the start of ferry's download to the first 200 (no poll/settle wait)."""
        return None if self.poll_wait_s is None else self.ferry_total_s - self.poll_wait_s

    @property
    def baseline_s(self) -> float:
        return self.baseline_download_s + self.baseline_load_s


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def ferry_log_times(log_text: str, model: str, version: int) -> dict[str, float]:
    """From ferry's log: when its download of `version` started and how long it and the
    load took (`download_start` is epoch seconds, to millisecond resolution)."""
    found: dict[str, float] = {}
    downloaded = re.compile(
        _LOG_TIME + rf".*/{model}/{version}: downloaded \d+ files, [\d.]+ MB in (?P<s>[\d.]+)s"
    )
    available = re.compile(
        _LOG_TIME + rf".*model {model}: version {version} AVAILABLE \(.*, (?P<s>[\d.]+)s\)"
    )
    for line in log_text.splitlines():
        if m := downloaded.match(line):
            found["download_s"] = float(m["s"])
            found["download_start"] = _log_time(m["ts"]) - float(m["s"])
        elif m := available.match(line):
            found["load_s"] = float(m["s"])
    return found


@contextlib.contextmanager
def moto_store(log_path: Path) -> Iterator[tuple[Server, object]]:
    """moto's S3 server (server mode) in its own process on 127.0.0.1, and a boto3
    client for it; stopped by its PID on the way out."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    with running_server("moto", argv, port, log_path, probes={}) as server:
        deadline = time.monotonic() + 30
        while True:
            if server.process.poll() is not None:
                raise ServerError(f"moto exited:\n{server.log_tail()}")
            with contextlib.suppress(OSError):
                if request(port, "GET", "/moto-api/")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise ServerError(f"moto not answering after 30 s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server, moto_client("s3", f"http://{HOST}:{port}")


def moto_client(service: str, endpoint: str):
    """A boto3 client for `service` on the moto server at `endpoint`."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )


def wait_for_version(port: int, model: str, version: int, body: bytes, deadline: float) -> float:
    """Predict on `version` until the first 200; returns its time.time(). Bounded."""
    path = f"/v1/models/{model}/versions/{version}:predict"
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if request(port, "POST", path, body, headers)[0] == 200:
                return time.time()
        time.sleep(0.02)
    raise ServerError(f"{model} version {version} not serving within the deadline")


def baseline_load(client, key: str, target: Path, width: int) -> tuple[float, float]:
    """A plain boto3 download of `key`, then InferenceSession creation + one run."""
    started = time.perf_counter()
    client.download_file(BUCKET, key, str(target))
    downloaded = time.perf_counter()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: instance_values(width)[np.newaxis, :]})
    loaded = time.perf_counter()
    del session
    target.unlink()
    return downloaded - started, loaded - downloaded


def event_queue(endpoint: str) -> tuple[str, list[dict]]:
    """An SQS queue on moto for the bucket's S3 events, and that notification config."""
    sqs = moto_client("sqs", endpoint)
    url = sqs.create_queue(QueueName="ferry-events")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    return url, [{"QueueArn": attributes["Attributes"]["QueueArn"], "Events": events}]


def cold_start(folder: Path, reps: int, notes: list[str], mode: str) -> list[ColdStart]:
    """Serve mlp_large from moto; upload `reps` new versions one by one and time each.
    `mode` "events": ferry also reads the bucket's S3 events from an SQS queue."""
    source = write_version(mlp_large(), folder / "src", 1) / "model.onnx"
    size_mb = source.stat().st_size / 1e6
    notes.append(f"mlp_large model.onnx: {size_mb:.1f} MB")
    body = predict_body(WIDTH[LARGE])
    results: list[ColdStart] = []
    with moto_store(folder / "moto.log") as (moto, client):
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(source), BUCKET, f"{PREFIX}/{LARGE}/1/model.onnx")
        port, grpc_port = free_port(), free_port()
        endpoint = f"http://{HOST}:{moto.port}"
        extra: list[str] = []
        if mode == "events":
            queue_url, queues = event_queue(endpoint)
            client.put_bucket_notification_configuration(
                Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": queues}
            )
            extra = ["--s3_event_queue_url", queue_url]
        argv = [
            str(Path(sys.executable).parent / "ferry"), "serve", f"s3://{BUCKET}/{PREFIX}",
            "--s3_endpoint_url", endpoint, "--file_system_poll_wait_seconds", str(POLL_S),
            "--model_cache_dir", str(folder / "cache"), "--host", HOST,
            "--rest_api_port", str(port), "--port", str(grpc_port), *extra,
        ]  # fmt: skip
        env = {**os.environ, **CREDENTIALS}
        env.pop("AWS_ENDPOINT_URL", None)
        env.pop("AWS_ENDPOINT_URL_S3", None)
        env["AWS_ENDPOINT_URL_SQS"] = endpoint
        print(f"starting ferry on s3://{BUCKET}/{PREFIX} ({endpoint}) ...", file=sys.stderr)
        log_path = folder / f"ferry-s3-{mode}.log"
        with running_server("ferry-s3", argv, port, log_path, {LARGE: body}, env) as ferry:
            notes.append("ferry served version 1 from S3 at start-up (probe answered 200)")
            me = os.getpid()
            for version in range(2, 2 + reps):
                time.sleep(2.0)  # let the previous version's unload and clean-up finish
                key = f"{PREFIX}/{LARGE}/{version}/model.onnx"
                print(f"cold start: uploading version {version} ...", file=sys.stderr)
                t0 = time.time()
                client.upload_file(str(source), BUCKET, key)
                uploaded = time.time()
                cpu0, wall0 = cpu_sample(ferry), time.monotonic()
                others0 = process_cpu(moto.pid) + process_cpu(me)
                first = wait_for_version(
                    port, LARGE, version, body, time.monotonic() + COLD_START_TIMEOUT_S
                )
                cpu1, wall1 = cpu_sample(ferry), time.monotonic()
                others1 = process_cpu(moto.pid) + process_cpu(me)
                logged = ferry_log_times(ferry.log_path.read_text(errors="replace"), LARGE, version)
                start = logged.get("download_start")
                result = ColdStart(
                    version=version,
                    mode=mode,
                    upload_s=uploaded - t0,
                    ferry_total_s=first - uploaded,
                    poll_wait_s=None if start is None else start - uploaded,
                    ferry_download_s=logged.get("download_s"),
                    ferry_load_s=logged.get("load_s"),
                )
                busy = cpu1.machine_busy - cpu0.machine_busy
                mine = (cpu1.server - cpu0.server) + (others1 - others0)
                result.other_cores = max(0.0, busy - mine) / (wall1 - wall0)
                if start is None:
                    notes.append(f"version {version}: no download line in ferry's log")
                time.sleep(2.0)  # ferry unloads the old version now; keep it off the baseline
                print(f"cold start: baseline for version {version} ...", file=sys.stderr)
                result.baseline_download_s, result.baseline_load_s = baseline_load(
                    client, key, folder / "baseline.onnx", WIDTH[LARGE]
                )
                results.append(result)
            notes += [f"ferry-s3 log: {x}" for x in log_findings(ferry.log_path)]
    return results


def log_findings(log_path: Path) -> list[str]:
    """ferry's WARNING/ERROR lines (at most 5), to show in the notes."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    bad = [x for x in lines if " WARNING " in x or " ERROR " in x or "Traceback" in x]
    return [x[:300] for x in bad[:5]]


# -- auth cost --------------------------------------------------------------------------


@dataclass
class AuthRun:
    """One c64 wrk run of one credential mode, with ferry's counters over the window."""

    mode: str  # "none", "sigv4", "bearer"
    round: int
    api: str = "tfserving"  # a key of AUTH_APIS
    load: LoadResult | None = None
    failure: str | None = None
    server_cores: float | None = None
    other_cores: float | None = None
    ok: float = 0.0
    not_ok: dict[str, float] = field(default_factory=dict)
    refused: float = 0.0
    checks: float = 0.0
    check_us: float | None = None


@dataclass(frozen=True)
class AuthApi:
    """A REST API the auth cost is measured on: its predict path and `api` metric label."""

    title: str
    path: str
    metric_api: str


# TF Serving REST is ferry's main API; the SageMaker runtime API is the one boto3's
# sagemaker-runtime client signs with SigV4 (`invoke_endpoint`), the same JSON body.
AUTH_APIS = {
    "tfserving": AuthApi("TF REST JSON", f"/v1/models/{SMALL}:predict", "rest"),
    "runtime": AuthApi(
        "SageMaker runtime",
        f"/endpoints/{SMALL.replace('_', '-')}/invocations",
        "sagemaker_runtime",
    ),
}


def create_key(path: Path, kind: str) -> dict[str, str]:
    ferry = str(Path(sys.executable).parent / "ferry")
    done = subprocess.run(
        [ferry, "keys", "create", "--file", str(path), "--kind", kind, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def wait_authed(server: Server, body: bytes, headers: dict[str, str]) -> None:
    """Until `server` answers a predict with `headers` with 200 (bounded)."""
    deadline = time.monotonic() + 90
    last = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            status, payload = request(
                server.port, "POST", f"/v1/models/{SMALL}:predict", body, headers
            )
            if status == 200:
                return
            last = f"HTTP {status} {payload[:200]!r}"
        time.sleep(0.25)
    raise ServerError(f"{server.name} not serving after 90 s ({last}):\n{server.log_tail()}")


def auth_run(
    server: Server,
    api: str,
    mode: str,
    round_: int,
    headers: dict[str, str],
    metrics_headers: dict[str, str],
    body: bytes,
    folder: Path,
    connections: int,
    warmup: float,
    duration: float,
) -> AuthRun:
    """Check one request with `headers`, warm up, then one measured wrk run."""
    result = AuthRun(mode, round_, api)
    path = AUTH_APIS[api].path
    status, payload = request(server.port, "POST", path, body, headers)
    if status != 200:
        result.failure = f"check request: HTTP {status} {payload[:200]!r}"
        return result
    body_file = folder / "small.json"
    script = write_script(folder / f"auth-{api}-{mode}.lua", body_file, headers)
    url = f"http://{HOST}:{server.port}{path}"
    try:
        if warmup > 0:
            run_wrk(url, script, connections, warmup)
        before = metrics(server.port, metrics_headers)
        cpu0, wall0 = cpu_sample(server), time.monotonic()
        load = run_wrk(url, script, connections, duration)
        cpu1, wall1 = cpu_sample(server), time.monotonic()
        after = metrics(server.port, metrics_headers)
    except (LoadError, ServerError, OSError) as exc:
        result.failure = str(exc).splitlines()[0][:300]
        return result
    wall = wall1 - wall0
    result.load = load
    result.server_cores = (cpu1.server - cpu0.server) / wall
    busy = cpu1.machine_busy - cpu0.machine_busy
    result.other_cores = max(0.0, busy - (cpu1.server - cpu0.server) - load.client_cpu_s) / wall
    outcomes = delta(
        before, after, "ferry_requests_total", model=SMALL, api=AUTH_APIS[api].metric_api
    )
    for labels, n in outcomes.items():
        outcome = dict(labels).get("outcome", "?")
        if outcome == "OK":
            result.ok += n
        else:
            result.not_ok[outcome] = result.not_ok.get(outcome, 0.0) + n
    result.refused = sum(delta(before, after, "ferry_auth_refused_total").values())
    result.checks = sum(delta(before, after, "ferry_auth_checks_total", api="http").values())
    seconds = sum(delta(before, after, "ferry_auth_check_seconds_total", api="http").values())
    if result.checks:
        result.check_us = seconds / result.checks * 1e6
    return result


def auth_cost(folder: Path, args: argparse.Namespace, notes: list[str]) -> list[AuthRun]:
    """ferry without and with --auth, both running, runs interleaved round by round."""
    from ferry.examples import build_examples

    root = folder / "models"
    build_examples(root, [SMALL])
    body = predict_body(WIDTH[SMALL])
    (folder / "small.json").write_bytes(body)
    key_file = folder / "keys.json"
    sigv4 = create_key(key_file, "sigv4")
    token = create_key(key_file, "token")["token"]
    plain = {"Content-Type": "application/json"}
    bearer = {**plain, "Authorization": f"Bearer {token}"}
    ferry = str(Path(sys.executable).parent / "ferry")
    runs: list[AuthRun] = []
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, extra in (("ferry", []), ("ferry --auth", ["--auth", str(key_file)])):
            port, grpc_port = free_port(), free_port()
            argv = [
                ferry, "serve", str(root), "--host", HOST, "--rest_api_port", str(port),
                "--port", str(grpc_port), *args.ferry_args, *extra,
            ]  # fmt: skip
            # The auth server refuses the unauthenticated probe; it is waited for below.
            probes = {} if extra else {SMALL: body}
            print(f"starting {name} on port {port} ...", file=sys.stderr)
            log = folder / f"{name.replace(' --', '-')}.log"
            servers[name] = stack.enter_context(running_server(name, argv, port, log, probes))
        authed = servers["ferry --auth"]
        wait_authed(authed, body, bearer)
        status, _ = request(authed.port, "POST", f"/v1/models/{SMALL}:predict", body, plain)
        notes.append(f"ferry --auth answered an unsigned predict with HTTP {status}")
        for round_, api, mode in itertools.product(
            range(1, args.rounds + 1), args.auth_apis, ("none", "sigv4", "bearer")
        ):
            server = servers["ferry"] if mode == "none" else authed
            if mode == "sigv4":  # signed now: valid for 5 minutes, the run takes seconds
                url = f"http://{HOST}:{server.port}{AUTH_APIS[api].path}"
                headers = sign_headers(
                    "POST", url, body, sigv4["id"], sigv4["aws_secret_access_key"],
                    headers=dict(plain),
                )  # fmt: skip
            else:
                headers = bearer if mode == "bearer" else plain
            print(f"wrk c{args.connections} {api} auth={mode} round {round_} ...", file=sys.stderr)
            runs.append(
                auth_run(
                    server,
                    api,
                    mode,
                    round_,
                    headers,
                    bearer,
                    body,
                    folder,
                    args.connections,
                    args.warmup,
                    args.duration,
                )
            )
        for server in servers.values():
            notes += [f"{server.name} log: {x}" for x in log_findings(server.log_path)]
    return runs


# -- report -------------------------------------------------------------------------------


def render(
    settings: list[tuple[str, str]],
    machine: list[tuple[str, str]],
    cold: list[ColdStart],
    auth: list[AuthRun],
    connections: int,
    notes: list[str],
    title: str,
) -> str:
    out = [f"# {title}", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine]
    out.append(f"- load average at end (1/5/15 min): {load_average()}")
    out += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in settings]

    out += ["", "## Cold start of mlp_large from S3 (moto server mode)", ""]
    out += [
        "Seconds. ferry total: upload of the new version's object complete -> first 200 "
        "from `versions/N:predict`. Wait: upload complete -> ferry starts downloading (its "
        f"log): mode poll waits for the next poll (every {POLL_S:g} s), mode events for the "
        "S3 event through SQS (`--s3_event_queue_url`); the download then runs during the "
        f"{SETTLE_S:g} s settle check. ferry active: the rest (download, the settle check's "
        "second listing, load, warm-up, first request). Baseline: boto3 `download_file` of "
        "the same object + InferenceSession creation and first run, in this process.",
        "",
        "| mode | version | upload | ferry total | wait | ferry active | ferry download "
        "| ferry load + warm-up | baseline download | baseline load | baseline total "
        "| total / baseline | active / baseline | other CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cold:
        active = c.ferry_active_s
        out.append(
            f"| {c.mode} | {c.version} | {fmt(c.upload_s)} | {fmt(c.ferry_total_s)} "
            f"| {fmt(c.poll_wait_s)} "
            f"| {fmt(active)} | {fmt(c.ferry_download_s)} | {fmt(c.ferry_load_s)} "
            f"| {fmt(c.baseline_download_s)} | {fmt(c.baseline_load_s)} | {fmt(c.baseline_s)} "
            f"| {fmt(c.ferry_total_s / c.baseline_s)} "
            f"| {fmt(None if active is None else active / c.baseline_s)} "
            f"| {fmt(c.other_cores)} |"
        )
    for mode in COLD_MODES:
        runs = [c for c in cold if c.mode == mode]
        if not runs:
            continue
        out.append(
            f"| {mode} | median | {fmt(median([c.upload_s for c in runs]))} "
            f"| {fmt(median([c.ferry_total_s for c in runs]))} "
            f"| {fmt(median([c.poll_wait_s for c in runs]))} "
            f"| {fmt(median([c.ferry_active_s for c in runs]))} "
            f"| {fmt(median([c.ferry_download_s for c in runs]))} "
            f"| {fmt(median([c.ferry_load_s for c in runs]))} "
            f"| {fmt(median([c.baseline_download_s for c in runs]))} "
            f"| {fmt(median([c.baseline_load_s for c in runs]))} "
            f"| {fmt(median([c.baseline_s for c in runs]))} "
            f"| {fmt(median([c.ferry_total_s / c.baseline_s for c in runs]))} "
            f"| {fmt(median([a / c.baseline_s for c in runs if (a := c.ferry_active_s)]))} "
            f"| {fmt(median([c.other_cores for c in runs]))} |"
        )
    if not cold:
        out.append("| (not measured) | | | | | | | | | | | | | |")

    out += ["", f"## Cost of --auth: mlp_small, c{connections} (wrk)", ""]
    out += [
        "accepted / refused / checks: ferry's `ferry_requests_total{outcome=OK}`, "
        "`ferry_auth_refused_total` and `ferry_auth_checks_total{api=http}` growth over the "
        "measured window (checks and OK differ by the requests in flight at its edges and "
        "the metrics read). check µs: "
        "`ferry_auth_check_seconds_total / ferry_auth_checks_total` in the window.",
        "",
        "| round | API | auth | req/s | / no auth | p50 ms | p99 ms | wrk errors "
        "| accepted (OK) | not OK | refused | checks | check µs | server CPU (cores) "
        "| load gen CPU (cores) | other CPU (cores) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in auth:
        head = f"| {r.round} | {AUTH_APIS[r.api].title} | {r.mode} "
        if r.load is None:
            out.append(f"{head}| FAILED: {r.failure} | | | | | | | | | | | | |")
            continue
        w = r.load
        not_ok = ", ".join(f"{int(n)} {k}" for k, n in sorted(r.not_ok.items())) or "0"
        out.append(
            f"{head}| {fmt(w.requests_per_s, 0)} | {fmt(round_ratio(auth, r))} "
            f"| {fmt(w.p50_ms)} | {fmt(w.p99_ms)} "
            f"| {w.errors} | {int(r.ok):,} | {not_ok} | {int(r.refused)} | {int(r.checks):,} "
            f"| {fmt(r.check_us, 1)} | {fmt(r.server_cores)} "
            f"| {fmt(w.client_cpu_s / w.duration_s if w.duration_s else None)} "
            f"| {fmt(r.other_cores)} |"
        )
    if not auth:
        out.append("| (not measured) | | | | | | | | | | | | | | | |")

    out += ["", "## Targets (from this run)", ""]
    out += ["| target | value | goal | status |", "|---|---:|---|---|"]
    for label, value, goal, ok in targets(cold, auth):
        status = "n/a" if value is None else ("PASS" if ok else "FAIL")
        if goal == "informative" and value is not None:
            status = "-"
        out.append(f"| {label} | {fmt(value)} | {goal} | {status} |")
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def round_ratio(auth: list[AuthRun], run: AuthRun) -> float | None:
    """`run`'s req/s over the no-auth req/s of the same round (measured seconds apart,
    so a shared machine's drift hits both alike)."""
    base = next((r for r in auth if (r.round, r.api, r.mode) == (run.round, run.api, "none")), None)
    if run.load is None or base is None or base.load is None or not base.load.requests_per_s:
        return None
    return run.load.requests_per_s / base.load.requests_per_s


def slowdown(auth: list[AuthRun], mode: str, api: str) -> float | None:
    """1 - the median over rounds of (mode req/s / no-auth req/s of the same round), on
    one API."""
    ratio = median([round_ratio(auth, r) for r in auth if (r.mode, r.api) == (mode, api)])
    return None if ratio is None else 1 - ratio


def targets(
    cold: list[ColdStart], auth: list[AuthRun]
) -> list[tuple[str, float | None, str, bool]]:
    """(label, value, goal, met) for each target of the deploy benchmark."""
    total = {
        mode: median([c.ferry_total_s / c.baseline_s for c in cold if c.mode == mode])
        for mode in COLD_MODES
    }
    active = median([a / c.baseline_s for c in cold if (a := c.ferry_active_s) is not None])
    measured_apis = [api for api in AUTH_APIS if any(r.api == api for r in auth)]
    errors = sum(
        (r.load.errors if r.load else 1) + r.refused + sum(r.not_ok.values()) for r in auth
    )
    rows = [
        (
            "cold start mlp_large with S3 events: ferry (upload complete -> first 200) / "
            "(boto3 download + load), median",
            total["events"], "<= 1.50", total["events"] is not None and total["events"] <= 1.5,
        ),
        (
            f"same, polling every {POLL_S:g} s without events, median",
            total["poll"], "informative", total["poll"] is not None,
        ),
        (
            "same, from the start of ferry's download (wait excluded), both modes, median",
            active, "<= 1.50 (informative)", active is not None and active <= 1.5,
        ),
    ]  # fmt: skip
    for api, mode in itertools.product(measured_apis or ["tfserving"], ("sigv4", "bearer")):
        slow = slowdown(auth, mode, api)
        label = "SigV4" if mode == "sigv4" else "bearer"
        rows.append(
            (
                f"--auth {label}, {AUTH_APIS[api].title}: c64 req/s slowdown, "
                f"1 - median over rounds of {mode} / no auth",
                slow, "<= 0.10", slow is not None and slow <= 0.10,
            )
        )  # fmt: skip
    rows.append(
        (
            "auth runs: wrk errors + refused + non-OK (a failed run counts as one)",
            float(errors) if auth else None, "== 0", errors == 0,
        )
    )  # fmt: skip
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="new versions to time (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="auth rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--parts", default="coldstart,auth", help="comma-separated: coldstart, auth"
    )
    parser.add_argument(
        "--auth-apis",
        default=",".join(AUTH_APIS),
        help=f"comma-separated APIs for the auth cost: {', '.join(AUTH_APIS)} (default both)",
    )
    parser.add_argument("--quick", action="store_true", help="2 versions, 1 round of 5 s")
    # `--ferry-arg=--dataplane=rust`: the auth cost on the Rust front (both servers get it).
    parser.add_argument(
        "--ferry-arg",
        action="append",
        default=[],
        dest="ferry_args",
        help="an extra `ferry serve` argument for both auth servers (repeatable)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.rounds, args.duration = 2, 1, 5.0
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.auth_apis = [a.strip() for a in args.auth_apis.split(",") if a.strip()]
    unknown = set(args.auth_apis) - set(AUTH_APIS)
    if unknown:
        parser.error(f"unknown --auth-apis: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    machine = machine_description()
    settings = [
        ("cold start", f"{args.reps} new versions of mlp_large, one at a time, per mode; "
                       f"ferry serve s3://{BUCKET}/{PREFIX} --file_system_poll_wait_seconds "
                       f"{POLL_S:g} (settle {SETTLE_S:g} s, defaults otherwise), and the same "
                       "with --s3_event_queue_url (mode events)"),
        ("auth", f"wrk -t1 -c{args.connections}, {args.duration:g} s per run after "
                 f"{args.warmup:g} s warm-up, {args.rounds} round(s) of none / sigv4 / bearer, "
                 "both servers running, ferry defaults otherwise"
                 + (f" but {' '.join(args.ferry_args)}" if args.ferry_args else "")),
    ]  # fmt: skip
    notes: list[str] = []
    cold: list[ColdStart] = []
    auth: list[AuthRun] = []
    with tempfile.TemporaryDirectory(prefix="ferry-deploy-") as tmp:
        folder = Path(tmp)
        if "coldstart" in args.parts:
            try:
                for mode in COLD_MODES:
                    cold += cold_start(folder / f"cold-{mode}", args.reps, notes, mode)
            except (ServerError, OSError) as exc:
                notes.append(f"cold start failed: {str(exc)[:1500]}")
        if "auth" in args.parts:
            (folder / "auth").mkdir()
            try:
                auth = auth_cost(folder / "auth", args, notes)
            except (ServerError, OSError, subprocess.SubprocessError) as exc:
                notes.append(f"auth benchmark failed: {str(exc)[:1500]}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(
        settings, machine, cold, auth, args.connections, notes, f"ferry deploy benchmark, {stamp}"
    )
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"report written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
