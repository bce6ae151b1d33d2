"""Live versions: new, changed, broken, half-copied and removed version folders, while serving."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from support.models import mlp_model, scale_model, write_model
from support.server import FerryProcess, wait_until

FAST_POLL = ("--file_system_poll_wait_seconds", "0.2", "--version_settle_seconds", "0.1")
ONES = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def answer(server: FerryProcess, model: str = "m", suffix: str = "") -> float:
    """The factor of the scale model that answered (its version number in these tests)."""
    response = server.predict(model, ONES, suffix)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0][0]


def status(server: FerryProcess, model: str = "m") -> dict[str, dict]:
    body = server.get(f"/v1/models/{model}").json()
    return {s["version"]: s for s in body["model_version_status"]}


@pytest.fixture
def served(model_root: Path, start_server) -> FerryProcess:
    write_model(scale_model(1.0), model_root / "m", 1)
    server = start_server(str(model_root), *FAST_POLL)
    server.wait_version("m", 1)
    return server


def test_new_version_takes_over_and_old_one_ends(served: FerryProcess, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / "m", 2)
    served.wait_version("m", 2)
    assert answer(served) == 2.0
    wait_until(lambda: status(served)["1"]["state"] == "END", 10, message="v1 END")
    assert served.predict("m", ONES, "/versions/1").status_code == 404


def test_broken_version_never_replaces_the_serving_one(
    served: FerryProcess, model_root: Path
) -> None:
    broken = model_root / "m" / "2"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    wait_until(
        lambda: status(served).get("2", {}).get("state") == "END",
        10,
        message="v2 load failure in status",
    )
    failure = status(served)["2"]["status"]
    assert failure["error_code"] != "OK"
    assert failure["error_message"]
    assert answer(served) == 1.0
    assert status(served)["1"]["state"] == "AVAILABLE"
    # Fixing the folder is noticed and retried.
    shutil.rmtree(broken)
    write_model(scale_model(2.0), model_root / "m", 2)
    served.wait_version("m", 2)
    assert answer(served) == 2.0


def test_version_folder_without_a_model_is_reported(served: FerryProcess, model_root: Path) -> None:
    (model_root / "m" / "3").mkdir()
    wait_until(lambda: status(served).get("3", {}).get("state") == "END", 10, message="v3 failure")
    assert status(served)["3"]["status"]["error_code"] == "NOT_FOUND"
    assert answer(served) == 1.0


def test_half_copied_folder_does_not_disturb_serving(
    served: FerryProcess, model_root: Path
) -> None:
    complete = scale_model(3.0).SerializeToString()
    folder = model_root / "m" / "3"
    folder.mkdir()
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            response = served.predict("m", ONES)
            if response.status_code != 200:
                failures.append(response.text)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        with open(folder / "model.onnx", "wb") as handle:
            handle.write(complete[: len(complete) // 2])
            handle.flush()
            time.sleep(1.0)  # a slow copy: longer than a poll and the settle time
            handle.write(complete[len(complete) // 2 :])
        served.wait_version("m", 3)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert answer(served) == 3.0


def test_changed_version_folder_is_reloaded(served: FerryProcess, model_root: Path) -> None:
    staging = model_root / "staging"
    write_model(scale_model(5.0), staging, 1)
    (staging / "1" / "model.onnx").replace(model_root / "m" / "1" / "model.onnx")
    wait_until(lambda: answer(served) == 5.0, 10, message="reloaded v1")
    assert status(served)["1"]["state"] == "AVAILABLE"


def test_removed_version_falls_back_to_the_previous_one(
    served: FerryProcess, model_root: Path
) -> None:
    write_model(scale_model(2.0), model_root / "m", 2)
    served.wait_version("m", 2)
    shutil.rmtree(model_root / "m" / "2")
    served.wait_version("m", 1)
    wait_until(lambda: answer(served) == 1.0, 10, message="v1 serving again")


def test_new_model_folder_is_picked_up(served: FerryProcess, model_root: Path) -> None:
    write_model(scale_model(4.0), model_root / "late", 1)
    served.wait_version("late", 1)
    assert answer(served, "late") == 4.0


def test_swaps_under_concurrent_load_fail_no_request(
    served: FerryProcess, model_root: Path
) -> None:
    seen: set[float] = set()
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(f"{served.url}/v1/models/m:predict", json=ONES, timeout=10)
            except requests.RequestException as exc:
                failures.append(repr(exc))
                continue
            if response.status_code != 200:
                failures.append(response.text)
            else:
                seen.add(response.json()["predictions"][0][0])

    workers = [threading.Thread(target=traffic) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        for version in range(2, 6):
            write_model(scale_model(float(version)), model_root / "m", version)
            served.wait_version("m", version)
            time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert 5.0 in seen
    assert seen <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_config_file_policy_and_labels(model_root: Path, start_server, tmp_path: Path) -> None:
    for version in (1, 2, 3):
        write_model(scale_model(float(version)), model_root / "m", version)
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "m"
    base_path: "{model_root / "m"}"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
""")
    server = start_server("--model_config_file", str(config), *FAST_POLL)
    server.wait_version("m", 1)
    server.wait_version("m", 2)
    assert answer(server, suffix="/labels/stable") == 1.0
    assert answer(server, suffix="/labels/canary") == 2.0
    assert answer(server) == 2.0  # latest of the served ones; 3 is not in the policy
    assert "3" not in status(server)
    assert (
        server.get("/v1/models/m/labels/stable").json()["model_version_status"][0]["version"] == "1"
    )


@pytest.mark.slow
def test_memory_stays_bounded_across_50_reloads(model_root: Path, start_server) -> None:
    """Each reload swaps in a ~16 MB model; a leak would grow RSS by ~800 MB over 50."""
    models = [mlp_model(seed=s, padding_bytes=16 * 1024 * 1024) for s in (1, 2)]
    write_model(models[0], model_root / "m", 1)
    server = start_server(str(model_root), *FAST_POLL)
    server.wait_version("m", 1)
    process = psutil.Process(server.pid)
    staging = model_root / "staging"
    body = {"instances": [[0.5] * 8]}

    def reload(index: int) -> None:
        write_model(models[index % 2], staging, index)
        (staging / str(index) / "model.onnx").replace(model_root / "m" / "1" / "model.onnx")
        wait_until(
            lambda: (
                server.get("/monitoring/prometheus/metrics").text.count(
                    "ferry_load_latency_seconds_count"
                )
                and _loads(server) >= index + 1
            ),
            30,
            message=f"reload {index}",
        )
        assert server.predict("m", body).status_code == 200

    for index in range(1, 6):
        reload(index)
    baseline = process.memory_info().rss
    for index in range(6, 51):
        reload(index)
    grown = process.memory_info().rss - baseline
    assert grown < 150 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB over 45 reloads"


def _loads(server: FerryProcess) -> int:
    for line in server.get("/monitoring/prometheus/metrics").text.splitlines():
        if line.startswith('ferry_load_latency_seconds_count{model="m"}'):
            return int(float(line.split()[-1]))
    return 0


def test_recorded_warmup_requests_run_before_a_version_serves(
    served: FerryProcess, model_root: Path
) -> None:
    """A version whose recorded warm-up request is invalid never serves; a valid one does."""
    bad = write_model(scale_model(2.0), model_root / "staging", 2)
    (bad / "assets.extra").mkdir()
    (bad / "assets.extra" / "warmup_requests.jsonl").write_text('{"instances": [[1.0]]}\n')
    bad.rename(model_root / "m" / "2")
    wait_until(
        lambda: status(served).get("2", {}).get("state") == "END", 10, message="v2 warm-up failure"
    )
    assert "warm-up failed" in status(served)["2"]["status"]["error_message"]
    assert answer(served) == 1.0

    good = write_model(scale_model(3.0), model_root / "staging", 3)
    (good / "assets.extra").mkdir()
    (good / "assets.extra" / "warmup_requests.jsonl").write_text(
        '{"instances": [[1.0, 2.0, 3.0, 4.0]]}\n{"inputs": [[0.0, 0.0, 0.0, 0.0]]}\n'
    )
    good.rename(model_root / "m" / "3")
    served.wait_version("m", 3)
    assert answer(served) == 3.0


def test_config_file_is_reread_when_it_changes(
    model_root: Path, start_server, tmp_path: Path
) -> None:
    write_model(scale_model(1.0), model_root / "a", 1)
    write_model(scale_model(2.0), model_root / "b", 1)
    config = tmp_path / "models.config"
    entry = 'config {{ name: "{0}" base_path: "{1}" }}'
    config.write_text(f"model_config_list {{ {entry.format('a', model_root / 'a')} }}")
    server = start_server(
        "--model_config_file",
        str(config),
        "--model_config_file_poll_wait_seconds",
        "0.2",
        *FAST_POLL,
    )
    server.wait_version("a", 1)
    assert server.get("/v1/models/b").status_code == 404
    config.write_text(f"model_config_list {{ {entry.format('b', model_root / 'b')} }}")
    server.wait_version("b", 1)
    assert answer(server, "b") == 2.0
    wait_until(lambda: server.get("/v1/models/a").status_code == 404, 10, message="model a removed")
    # A broken edit keeps the previous configuration in force.
    config.write_text("model_config_list { config { nme: 'oops' } }")
    time.sleep(1.0)
    assert answer(server, "b") == 2.0
    assert "not reloaded" in server.log()
