"""A ferry cluster on one machine: replicas in network namespaces behind HAProxy.

Kubernetes cannot run here, but its parts that matter to a replica can: each replica
is a `ferry serve s3://...` in its own network namespace with its own address (a pod),
HAProxy health-checks `/v2/health/ready` and balances across them (a Service with
readiness-gated endpoints, or an ingress), and one moto server plays S3 and SQS, with
the bucket's events fanned out through an SNS topic to one queue per replica (ferry
deletes what it reads, so replicas cannot share a queue).

    host namespace (this process: uploads, direct checks)   fcl<pid>c<n>: .254
        |  veth
    hub namespace: bridge br0 (.1) -- moto :5000, HAProxy :8080, wrk
        |  veth per replica
    replica namespaces r0..rN-1 (.11, .12, ...): ferry :8501 (REST) :8500 (gRPC)

Everything listens on the addresses of namespaces made here, never on the host's own
interfaces; the host end of the hub link only lets this process reach them. Names
carry this process's pid and a counter, so concurrent test sessions do not clash, and
`remove_stale` deletes what a killed session left (namespaces whose pid is gone, with
the processes still running in them, stopped by their pids). `Cluster.close` stops
every process it started by its pid and deletes every namespace and link, and runs
even when the set-up failed half-way. Every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import boto3
import requests
from botocore.config import Config

from ferry.examples import mlp_small, write_version

PREFIX = "fcl"
_NAMESPACE = re.compile(rf"^{PREFIX}(\d+)c\d+-")
REST_PORT = 8501
GRPC_PORT = 8500
MOTO_PORT = 5000
BALANCER_PORT = 8080  # retries on another replica
PLAIN_PORT = 8081  # no retries (kube-proxy-like)
BUCKET = "models"
MODEL = "mlp_small"
MODEL_PREFIX = "root"  # served as s3://models/root, the model under root/mlp_small/
# Replicas poll the store this rarely: a version that arrives sooner came by its event.
POLL_SECONDS = 60
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_clusters = count()


def predict_row() -> list[float]:
    """The one mlp_small input row every request here sends (784 values in [0, 1))."""
    return [round((i % 97) / 97, 4) for i in range(784)]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def netns_unavailable_reason() -> str | None:
    """Why a cluster cannot be built here (None when it can): `ip netns` needs root
    (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; HAProxy and wrk must be installed."""
    if shutil.which("ip") is None:
        return "`ip netns add` is not permitted here: iproute2's `ip` is not installed"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    for tool in ("haproxy", "wrk"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {tool}; `make test` installs it)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces of cluster sessions whose process is gone (a killed run),
    after stopping, by pid, the processes still running inside them. Returns their names."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    removed = []
    for line in listed:
        name = line.split(" ")[0]
        match = _NAMESPACE.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


def _free_subnet() -> str:
    """A 10.231.X.0/24 that no route on this host uses yet (X from this pid onwards)."""
    routes = _ip("-4", "route", "show", "table", "all").stdout
    for step in range(250):
        third = (os.getpid() + step) % 250 + 1
        prefix = f"10.231.{third}."
        if prefix not in routes:
            return prefix
    raise RuntimeError("no free 10.231.X.0/24 subnet")


def wait_for(condition, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `condition` until true; returns the seconds it took. Raises after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if condition():
                return time.monotonic() - started
        except (requests.RequestException, OSError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Replica:
    """One `ferry serve` in namespace `namespace` at `address`."""

    index: int
    namespace: str
    address: str
    queue_url: str
    log_path: Path
    cache_dir: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.address}:{REST_PORT}"

    @property
    def name(self) -> str:
        return f"r{self.index}"


@dataclass
class WrkResult:
    """One wrk run through the balancer. `errors`: socket errors (connect, read, write,
    timeout) plus responses with status >= 400; each is a request a client saw fail."""

    requests: int
    duration_s: float
    socket_errors: int
    status_errors: int
    p50_ms: float
    p99_ms: float
    detail: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.socket_errors + self.status_errors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


_WRK_SCRIPT = """\
-- Generated by tests/support/cluster.py: POST one TF REST predict body per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open({body}, "rb"))
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nCLUSTER_WRK {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"timeout\\":%d,\\"status\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Wrk:
    """A wrk run in the hub namespace against the balancer, started in the background,
    stopped early by SIGINT (wrk then prints its summary) or at its duration."""

    def __init__(
        self, cluster: Cluster, connections: int, duration_s: int, retrying: bool = True
    ) -> None:
        self.duration_s = duration_s
        base = cluster.balancer_url if retrying else cluster.plain_balancer_url
        argv = [
            "ip", "netns", "exec", cluster.hub, shutil.which("wrk") or "wrk",
            "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout=10s",
            "-s", str(cluster.wrk_script), f"{base}/v1/models/{MODEL}:predict",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.started = time.monotonic()

    def stop(self) -> WrkResult:
        """End the run now (SIGINT) and return its summary."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.result()

    def result(self) -> WrkResult:
        """Wait for the run to end (bounded: its duration and a margin) and parse it."""
        left = self.duration_s + 20 - (time.monotonic() - self.started)
        try:
            stdout, stderr = self.process.communicate(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        line = next((x for x in stdout.splitlines() if x.startswith("CLUSTER_WRK ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
        data = json.loads(line.split(" ", 1)[1])
        return WrkResult(
            requests=data["requests"],
            duration_s=data["duration_us"] / 1e6,
            socket_errors=sum(data[k] for k in ("connect", "read", "write", "timeout")),
            detail={k: data[k] for k in ("connect", "read", "write", "timeout", "status")},
            status_errors=data["status"],
            p50_ms=data["p50_us"] / 1e3,
            p99_ms=data["p99_us"] / 1e3,
        )


@dataclass
class Cluster:
    """`replicas` ferry replicas behind HAProxy, sharing moto's S3 and SQS. Use as a
    context manager (or call `build` and `close`); `close` undoes everything `build`
    did, whichever step failed."""

    workdir: Path
    replicas_wanted: int = 3
    ferry_args: tuple[str, ...] = ()
    replicas: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = f"{PREFIX}{os.getpid()}c{next(_clusters)}"
        self.hub = f"{tag}-hub"
        self.host_link = tag  # at most 15 characters: fcl + 7-digit pid + c + counter
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.subnet = ""
        self.balancer_pid = 0
        self.hub_address = ""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.wrk_script = self.workdir / "predict.lua"
        self.body_file = self.workdir / "predict.json"
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy from the environment

    # ---- addresses
    @property
    def moto_url(self) -> str:
        return f"http://{self.hub_address}:{MOTO_PORT}"

    @property
    def balancer_url(self) -> str:
        return f"http://{self.hub_address}:{BALANCER_PORT}"

    @property
    def plain_balancer_url(self) -> str:
        return f"http://{self.hub_address}:{PLAIN_PORT}"

    @property
    def stats_socket(self) -> Path:
        return self.workdir / "haproxy.sock"

    def __enter__(self) -> Cluster:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- set-up
    def build(self) -> None:
        remove_stale()
        self.subnet = _free_subnet()
        self.hub_address = self.subnet + "1"
        self._make_network()
        self._start_moto()
        queues = self._make_store()
        for index, queue_url in enumerate(queues):
            self.replicas.append(
                Replica(
                    index=index,
                    namespace=self.namespaces[index + 1],
                    address=f"{self.subnet}{11 + index}",
                    queue_url=queue_url,
                    log_path=self.workdir / f"ferry-r{index}.log",
                    cache_dir=self.workdir / f"cache-r{index}",
                )
            )
        self._write_wrk_script()
        self._start_balancer()
        for replica in self.replicas:
            self.start_replica(replica, wait=False)
        for replica in self.replicas:
            self.wait_ready(replica)
        self.wait_balanced(len(self.replicas))

    def _make_network(self) -> None:
        self._add_namespace(self.hub)
        hub = ("-n", self.hub)
        _ip(*hub, "link", "add", "br0", "type", "bridge")
        _ip(*hub, "addr", "add", f"{self.hub_address}/24", "dev", "br0")
        _ip(*hub, "link", "set", "br0", "up")
        _ip(*hub, "link", "set", "lo", "up")
        # The host's way in: one veth end here, the other on the hub's bridge.
        _ip("link", "add", self.host_link, "type", "veth",
            "peer", "name", "host", "netns", self.hub)  # fmt: skip
        _ip(*hub, "link", "set", "host", "master", "br0", "up")
        _ip("addr", "add", f"{self.subnet}254/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        for index in range(self.replicas_wanted):
            namespace = f"{self.host_link}-r{index}"
            self._add_namespace(namespace)
            _ip(*hub, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
                "netns", namespace)  # fmt: skip
            _ip(*hub, "link", "set", f"v{index}", "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{self.subnet}{11 + index}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)

    def _spawn(self, namespace: str, argv: list[str], log: Path, env: dict | None = None):
        handle = open(log, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**_clean_environment(), **(env or {})},
                cwd=self.workdir,
            )
        finally:
            handle.close()
        self.processes.append(process)
        return process

    def _start_moto(self) -> None:
        argv = [sys.executable, "-m", "moto.server", "-H", self.hub_address, "-p", str(MOTO_PORT)]
        process = self._spawn(self.hub, argv, self.workdir / "moto.log")

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError((self.workdir / "moto.log").read_text(errors="replace"))
            return self.http.get(self.moto_url + "/moto-api/", timeout=1).ok

        wait_for(up, 20, "moto's server")

    def aws(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, proxies={}),
        )

    def _make_store(self) -> list[str]:
        """The bucket with version 1, its events published to an SNS topic, and one SQS
        queue per replica subscribed to the topic (S3 allows one queue per event type and
        prefix; a topic is how AWS fans one bucket's events out to many consumers)."""
        s3, sns, sqs = self.aws("s3"), self.aws("sns"), self.aws("sqs")
        s3.create_bucket(Bucket=BUCKET)
        topic = sns.create_topic(Name="ferry-model-events")["TopicArn"]
        queues = []
        for index in range(self.replicas_wanted):
            url = sqs.create_queue(QueueName=f"ferry-r{index}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
            queues.append(url)
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "TopicConfigurations": [
                    {"TopicArn": topic, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                ]
            },
        )
        self.upload_version(1)
        return queues

    def upload_version(self, version: int) -> None:
        """Upload mlp_small (weights seeded by `version`) as `version` to the store."""
        folder = self.workdir / f"upload-{version}"
        path = write_version(mlp_small(seed=version), folder / MODEL, version) / "model.onnx"
        key = f"{MODEL_PREFIX}/{MODEL}/{version}/{path.name}"
        self.aws("s3").upload_file(str(path), BUCKET, key)

    def _write_wrk_script(self) -> None:
        row = ",".join(f"{v:.4f}" for v in predict_row())
        self.body_file.write_text(f'{{"instances": [[{row}]]}}')
        self.wrk_script.write_text(_WRK_SCRIPT.format(body=json.dumps(str(self.body_file))))

    def _start_balancer(self) -> None:
        config = self.workdir / "haproxy.cfg"
        config.write_text(haproxy_config(self))
        argv = ["haproxy", "-db", "-f", str(config)]
        self.balancer_pid = self._spawn(self.hub, argv, self.workdir / "haproxy.log").pid
        wait_for(self.stats_socket.exists, 10, "HAProxy's stats socket")

    # ---- replicas
    def start_replica(self, replica: Replica, wait: bool = True) -> None:
        argv = [
            sys.executable, "-m", "ferry.cli", "serve", f"s3://{BUCKET}/{MODEL_PREFIX}",
            "--host", replica.address, "--rest_api_port", str(REST_PORT),
            "--port", str(GRPC_PORT),
            "--s3_event_queue_url", replica.queue_url,
            "--file_system_poll_wait_seconds", str(POLL_SECONDS),
            "--version_settle_seconds", "0.2",
            "--model_cache_dir", str(replica.cache_dir),
            # One core's worth per replica: a pod with a 1-CPU limit, and no
            # oversubscription of this machine's cores when three run.
            "--intra_op_threads", "1",
            *self.ferry_args,
        ]  # fmt: skip
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url}
        replica.process = self._spawn(replica.namespace, argv, replica.log_path, env)
        replica.starts += 1
        if wait:
            self.wait_ready(replica)

    def wait_ready(self, replica: Replica, timeout: float = 60.0) -> float:
        def ready() -> bool:
            if replica.process is None or replica.process.poll() is not None:
                raise RuntimeError(f"{replica.name} exited:\n{self.log_tail(replica)}")
            return self.http.get(replica.url + "/v2/health/ready", timeout=2).status_code == 200

        return wait_for(ready, timeout, f"{replica.name} ready")

    def stop_replica(self, replica: Replica, sig: int = signal.SIGTERM, timeout: float = 60):
        """Send `sig` to the replica's pid and wait for it to exit; returns its status."""
        process = replica.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise

    def log_tail(self, replica: Replica, chars: int = 3000) -> str:
        return replica.log_path.read_text(errors="replace")[-chars:]

    def version_available(self, replica: Replica, version: int) -> bool:
        response = self.http.get(f"{replica.url}/v1/models/{MODEL}/versions/{version}", timeout=2)
        if response.status_code != 200:
            return False
        return response.json()["model_version_status"][0]["state"] == "AVAILABLE"

    def served_versions(self, replica: Replica) -> list[str]:
        """Versions the replica reports AVAILABLE (TF Serving's model status API)."""
        response = self.http.get(f"{replica.url}/v1/models/{MODEL}", timeout=2)
        statuses = response.json()["model_version_status"]
        return sorted(s["version"] for s in statuses if s["state"] == "AVAILABLE")

    # ---- the balancer
    def balancer_command(self, command: str) -> str:
        """One command on HAProxy's admin socket (a path socket: no namespace needed)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_stats(self, backend: str = "ferry") -> dict[str, dict[str, str]]:
        """HAProxy's `show stat` rows of the backend's servers, by server name
        (fields: status, stot (requests sent), wretr (retries), wredis (redispatches),
        hrsp_5xx, ...)."""
        lines = self.balancer_command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            r["svname"]: r
            for r in rows
            if r.get("pxname") == backend and r["svname"] not in ("BACKEND", "FRONTEND")
        }

    def balancer_up(self, backend: str = "ferry") -> list[str]:
        stats = self.server_stats(backend)
        return sorted(name for name, row in stats.items() if row["status"] == "UP")

    def wait_balanced(self, replicas: int, timeout: float = 20.0) -> float:
        """Wait until both backends' checks see `replicas` servers UP."""

        def balanced() -> bool:
            return all(len(self.balancer_up(b)) == replicas for b in ("ferry", "ferry_plain"))

        return wait_for(balanced, timeout, f"HAProxy seeing {replicas} replicas UP")

    def set_in_rotation(self, replica: Replica, serving: bool) -> None:
        """Take a replica out of the balancers' rotation (maintenance) or put it back."""
        state = "ready" if serving else "maint"
        for backend in ("ferry", "ferry_plain"):
            self.balancer_command(f"set server {backend}/{replica.name} state {state}")

    def wrk(self, connections: int, duration_s: int, retrying: bool = True) -> Wrk:
        """wrk through the retrying balancer (or the plain one) for at most `duration_s`."""
        return Wrk(self, connections, duration_s, retrying)

    # ---- teardown
    def close(self) -> None:
        """Stop every process started here (by pid), then delete namespaces and links."""
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for namespace in reversed(self.namespaces):
            _ip("netns", "del", namespace, check=False)
        self.namespaces.clear()
        _ip("link", "del", self.host_link, check=False)  # gone with the hub; to be sure
        self.http.close()


def haproxy_config(cluster: Cluster) -> str:
    """HAProxy in front of the replicas, as a Kubernetes Service with readiness-gated
    endpoints would be: checks of `/v2/health/ready` every 200 ms (down after 2 failed,
    up after 2 passed), on two frontends over the same replicas.

    `predict` (BALANCER_PORT) retries the failures that prove no replica answered
    (connection refused or reset, an empty or broken response, a 503, a timeout) on
    another replica (`option redispatch 1`): inference is idempotent, so a resent POST
    is safe. `plain` (PLAIN_PORT) never retries, as kube-proxy's iptables rules do not:
    what it shows is what ferry's own drain achieves. Keep-alive towards the replicas
    lasts less than ferry's 5 s, so the balancer closes idle connections first."""
    blocks = []
    for backend in ("ferry", "ferry_plain"):
        servers = "\n".join(
            f"    server {r.name} {r.address}:{REST_PORT} check" for r in cluster.replicas
        )
        retries = (
            "    retries 3\n    option redispatch 1\n"
            "    retry-on conn-failure empty-response junk-response response-timeout 503\n"
            if backend == "ferry"
            else "    retries 0\n    retry-on none\n"
        )
        blocks.append(
            f"backend {backend}\n    balance roundrobin\n{retries}"
            "    option httpchk GET /v2/health/ready\n"
            "    http-check expect status 200\n"
            "    default-server inter 200ms fastinter 100ms downinter 500ms fall 2 rise 2"
            " pool-purge-delay 3s\n"
            f"{servers}\n"
        )
    return f"""\
global
    maxconn 4096
    stats socket {cluster.stats_socket} mode 600 level admin
    stats timeout 10s
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 4s

frontend predict
    bind {cluster.hub_address}:{BALANCER_PORT}
    default_backend ferry

frontend plain
    bind {cluster.hub_address}:{PLAIN_PORT}
    default_backend ferry_plain

{chr(10).join(blocks)}"""


def _clean_environment() -> dict[str, str]:
    """This environment without proxy settings (the cluster's addresses are local)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@contextlib.contextmanager
def cluster_or_skip(workdir: Path, ferry_args: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A built cluster for a test module; skips (with the reason) only where network
    namespaces cannot be made. Missing HAProxy or wrk fails: `make test` installs them."""
    import pytest

    reason = netns_unavailable_reason()
    if reason is not None and reason.startswith("`ip netns add`"):
        pytest.skip(reason)
    if reason is not None:
        raise RuntimeError(reason)
    with Cluster(workdir, ferry_args=ferry_args) as cluster:
        yield cluster


def requests_sent(cluster: Cluster) -> dict[str, int]:
    """Requests the retrying balancer has sent to each replica so far (HAProxy's stot)."""
    return {name: int(row["stot"]) for name, row in cluster.server_stats().items()}


# An HAProxy log line (`option httplog`) of a request whose server died after sending
# part of its response: status and bytes as received, then the termination state
# "SD" (server side, data phase). Nothing of such a request can be resent.
_CUT_OFF = re.compile(r" ferry/(r\d+) \S+ (\d{3}) (\d+) \S+ \S+ SD")


def balancer_log_size(cluster: Cluster) -> int:
    return (cluster.workdir / "haproxy.log").stat().st_size


def cut_off_responses(cluster: Cluster, since: int) -> list[str]:
    """Log lines, after byte `since` of HAProxy's log, of requests whose response the
    replica had begun when it died: the only failures a balancer cannot retry."""
    with open(cluster.workdir / "haproxy.log", "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if _CUT_OFF.search(line)]


def retried(cluster: Cluster) -> int:
    """Retries plus redispatches the retrying balancer has made so far."""
    stats = cluster.server_stats().values()
    return sum(int(row["wretr"] or 0) + int(row["wredis"] or 0) for row in stats)
