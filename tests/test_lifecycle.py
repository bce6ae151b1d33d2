"""Start-up forms and shutdown: TF Serving flags, environment variables, SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from support.models import scale_model, sleepy_model, write_model
from support.server import wait_until

ONES = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


@pytest.mark.parametrize("verb", [[], ["serve"], ["examples"]])
def test_every_verb_has_help(verb: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferry.cli", *verb, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_tf_serving_flags_serve_one_model(model_root: Path, start_server) -> None:
    write_model(scale_model(3.0), model_root / "anything", 1)
    server = start_server("--model_name", "half", "--model_base_path", str(model_root / "anything"))
    server.wait_version("half", 1)
    assert server.predict("half", ONES).json() == {"predictions": [[3.0] * 4]}


def test_docker_style_environment_variables(model_root: Path, start_server) -> None:
    write_model(scale_model(2.0), model_root / "mymodel", 1)
    server = start_server(env={"MODEL_NAME": "mymodel", "MODEL_BASE_PATH": str(model_root)})
    server.wait_version("mymodel", 1)
    assert server.predict("mymodel", ONES).json() == {"predictions": [[2.0] * 4]}


def test_conflicting_sources_are_a_usage_error(model_root: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.cli",
            "serve",
            str(model_root),
            "--model_base_path",
            str(model_root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "only one of" in result.stderr


def test_bad_config_file_is_refused_with_its_location(tmp_path: Path) -> None:
    config = tmp_path / "bad.config"
    config.write_text("model_config_list { config { name: 'x' base_pat: '/m' } }")
    result = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve", "--model_config_file", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "base_pat" in result.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_zero(model_root: Path, start_server) -> None:
    write_model(sleepy_model(), model_root / "sleepy", 1)
    server = start_server(str(model_root))
    server.wait_version("sleepy", 1)
    results: list[requests.Response] = []

    def slow_call() -> None:
        results.append(
            requests.post(f"{server.url}/v1/models/sleepy:predict", json=ONES, timeout=60)
        )

    callers = [threading.Thread(target=slow_call) for _ in range(3)]
    for caller in callers:
        caller.start()
    wait_until(
        lambda: (
            'ferry_requests_in_flight{model="sleepy"} 3.0'
            in server.get("/monitoring/prometheus/metrics").text
        ),
        10,
        message="three requests in flight",
    )
    server.process.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json() == {"predictions": [[1.0] * 4]} for r in results)
    assert server.process.wait(30) == 0
    log = server.log()
    assert "unloading for shutdown" in log
    assert "version 1 unloaded" in log


def test_the_server_tunes_the_garbage_collector_for_serving() -> None:
    """In a fresh interpreter (the test process's collector stays as it is): start-up
    objects are frozen out of the collector's walks, and collections come less often
    than Python's default of one per 700 new objects."""
    script = (
        "import gc\n"
        "from ferry.server import GC_THRESHOLDS, tune_garbage_collector\n"
        "before = gc.get_threshold()\n"
        "tune_garbage_collector()\n"
        "print(before[0], gc.get_threshold()[0], GC_THRESHOLDS[0], gc.get_freeze_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    default, tuned, declared, frozen = map(int, done.stdout.split())
    assert tuned == declared > default
    assert frozen > 10_000  # ferry.server imports starlette, uvicorn, grpc, numpy, ...
