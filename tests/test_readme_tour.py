"""The README's quick start and five-minute tour, run as written (issue 15).

The commands come from README.md itself (tests/support/readme.py reads the blocks marked
`<!-- readme-test: ... -->`), so the front door cannot drift from what works: each line
runs through bash in a fresh folder with this environment's `bin` first on PATH, and
what the README shows under a command (`# -> ...`) is checked against what it printed.

What a reader's machine has and a test's must not share is changed around the lines, not
in them: the servers listen on 127.0.0.1 on free ports (the Makefile's HOST/PORT and
`ferry serve`'s FERRY_* variables, docs/configuration.md), and the README's
`localhost:8501`/`localhost:8500` become those ports; S3, ECR and SageMaker are moto's
server (boto3 honours AWS_ENDPOINT_URL), with the README's buckets created and ferry's
image registered first, as an operator's account has them (docs/sagemaker.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import psutil
import pytest
import requests
from support.readme import README, Block, Command, marked_blocks, output_pattern, section, shows
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture
from support.sagemaker_moto import put_image
from support.server import free_port, wait_until

from ferry.cli import main
from ferry.deploy.sagemaker import image_tag

pytestmark = pytest.mark.timeout(600)

REPO = README.parent
# The interpreter running the tests is the environment's (normally .venv): its bin
# folder holds `ferry`, `python` and `python3` for the README's lines.
BIN = Path(sys.executable).parent
# Commands that start a server: they run in the background until their block is done
# (a reader runs them in a terminal of their own, or with `&`).
SERVER_COMMANDS = ("make serve", "ferry serve")
COMMAND_TIMEOUT = 240.0
READY_TIMEOUT = 180.0
# A server's answer follows the folder a few seconds later (the README says so for a
# new version): a `curl` line is asked again until it shows what the README shows.
CURL_SETTLE = 30.0


def serve_option(flag: str) -> click.Option:
    """`ferry serve`'s option `flag`: its default is the port the README's lines name,
    its environment variable how the test moves it (docs/configuration.md)."""
    (option,) = [p for p in main.commands["serve"].params if flag in p.opts]
    assert isinstance(option, click.Option) and isinstance(option.envvar, str), option
    return option


class Tour:
    """Runs a README block's commands in `folder`, with the servers they start stopped
    by PID (and their children) at the end."""

    def __init__(self, folder: Path, extra_env: dict[str, str | None] | None = None) -> None:
        """`extra_env`: variables to set for every line (None: unset it)."""
        self.folder = folder
        self.rest_port = free_port()
        self.grpc_port = free_port()
        rest, grpc = serve_option("--rest_api_port"), serve_option("--port")
        self.substitutions = {
            f"localhost:{rest.default}": f"127.0.0.1:{self.rest_port}",
            f"localhost:{grpc.default}": f"127.0.0.1:{self.grpc_port}",
        }
        ports = {
            # The Makefile's settings for `make serve` (HOST ?= ..., PORT ?= ...) ...
            "HOST": "127.0.0.1",
            "PORT": str(self.rest_port),
            "MODELS": str(folder / "models"),
            # ... and ferry serve's own, which `make serve` does not set (gRPC's port).
            str(serve_option("--host").envvar): "127.0.0.1",
            str(rest.envvar): str(self.rest_port),
            str(grpc.envvar): str(self.grpc_port),
        }
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **ports,
            **(extra_env or {}),
        }
        self.env = {key: value for key, value in env.items() if value is not None}
        self.servers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def line(self, command: Command) -> str:
        line = command.line
        for readme_address, test_address in self.substitutions.items():
            line = line.replace(readme_address, test_address)
        return line

    def write(self, block: Block) -> None:
        (self.folder / block.file_name).write_text(block.text)

    def run(self, block: Block) -> None:
        assert block.commands, "a readme-test run block with no commands"
        for command in block.commands:
            line = self.line(command)
            if line.startswith(SERVER_COMMANDS):
                self.start_server(line)
            else:
                self.check(command, line)

    def start_server(self, line: str) -> None:
        """Start the server in the background and wait until it is ready, as a reader
        waits for its log line before typing the next command."""
        line = re.sub(r"\s+#[^'\"]*$", "", line).removesuffix("&").strip()  # `cmd &  # note`
        # `make serve` runs in the clone, where its Makefile is; MODELS points it here.
        cwd = REPO if line.startswith("make ") else self.folder
        log = self.folder / f"server-{len(self.servers)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=cwd, env=self.env, stdout=out, stderr=out
            )
        self.servers.append((process, log))
        url = f"http://127.0.0.1:{self.rest_port}/v2/health/ready"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{line!r} exited early:\n{log.read_text(errors='replace')}")
            return requests.get(url, timeout=2).status_code == 200

        wait_until(ready, READY_TIMEOUT, interval=0.2, message=f"{line!r} ready")

    def check(self, command: Command, line: str) -> None:
        """Run `line`; it succeeds and prints what the README shows (if it shows any)."""
        settle = CURL_SETTLE if line.startswith("curl ") else 0.0
        deadline = time.monotonic() + settle
        while True:
            result = subprocess.run(
                ["bash", "-c", line],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
            matches = command.expected is None or shows(command.expected, result.stdout)
            if (result.returncode == 0 and matches) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        context = f"{line}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr[-4000:]}"
        assert result.returncode == 0, f"exit {result.returncode}: {context}"
        assert matches, (
            f"the README shows {command.expected!r}\n"
            f"(pattern {output_pattern(command.expected or '').pattern})\nbut: {context}"
        )

    def stop(self) -> None:
        """Stop every server started, and whatever it started (make's ferry), by PID."""
        for process, _ in self.servers:
            try:
                tree = [*psutil.Process(process.pid).children(recursive=True)]
                tree.append(psutil.Process(process.pid))
            except psutil.NoSuchProcess:
                tree = []
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.terminate()
            _, alive = psutil.wait_procs(tree, timeout=30)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            process.wait(10)

    def logs(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for _, log in self.servers)


def blocks(heading: str) -> list[Block]:
    found = marked_blocks(section(heading))
    assert found, f"README.md's '## {heading}' has no readme-test block"
    return found


def run_all(tour: Tour, found: list[Block]) -> None:
    try:
        for block in found:
            if block.kind == "write":
                tour.write(block)
            else:
                tour.run(block)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- server logs:\n{tour.logs()}") from None
    finally:
        tour.stop()


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    for tool in ("make", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"the quick start needs {tool}, which this machine lacks")
    dry_run = subprocess.run(
        ["make", "-n", "serve"], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )
    assert dry_run.returncode == 0, dry_run.stderr
    if "pip " in dry_run.stdout:
        reason = "`make serve` would install ferry into .venv first (its stamp is older than "
        pytest.skip(reason + "pyproject.toml): run `make serve` once; this test installs nothing")
    tour = Tour(tmp_path)
    run_all(tour, blocks("Quick start"))


def test_the_five_minute_tour_runs_as_written(
    tmp_path: Path,
    moto_s3: MotoS3,  # noqa: F811
) -> None:
    for module in ("tensorflow", "tf2onnx", "sklearn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the tour needs {module} (make test installs it)")
    if shutil.which("curl") is None:
        pytest.skip("the tour needs curl, which this machine lacks")
    found = blocks("A five-minute tour")
    # What an operator's AWS account has before the tour: the bucket it pushes to, and
    # ferry's image in ECR (docs/sagemaker.md), which deploy's preflight checks.
    lines = " ".join(c.line for b in found for c in b.commands)
    for bucket in sorted(set(re.findall(r"s3://([a-z0-9.-]+)/", lines))):
        moto_s3.client.create_bucket(Bucket=bucket)
    put_image(moto_s3.endpoint_url, "ferry", image_tag())
    # moto's endpoint and keys, and no ~/.aws of the machine running the tests.
    aws: dict[str, str | None] = {
        **moto_s3.env,
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_PROFILE": None,
    }
    tour = Tour(tmp_path, aws)
    run_all(tour, found)


def test_the_output_notation_keeps_what_it_shows() -> None:
    """What `# -> ` lines promise: decimals and `...` are loose, the rest is not (so a
    version "1" shown is never a "2" answered, and a missing key fails)."""
    status = '{\n "model_version_status": [\n  {"version": "2", "state": "AVAILABLE", "x": 0}]}'
    assert shows('{"model_version_status": [{"version": "2", "state": "AVAILABLE", ...}]}', status)
    assert not shows('{"model_version_status": [{"version": "1", ...}]}', status)
    assert not shows('{"model_status": [...]}', status)
    assert shows('{"predictions": [[0.11, 0.09, ...]]}', '{"predictions":[[1e-05,0.5,0.2]]}')
    assert not shows('{"predictions": [[0.11, 0.09, ...]]}', '{"error": "no such model"}')
    assert shows("wrote models/digits/1", "wrote models/digits/1\n")
    assert not shows("wrote models/digits/1", "wrote models/digits/1 and more")
    assert not shows("uploaded 2 files", "uploaded2files")
