"""Layout mistakes are logged loudly and specifically, once per change of the folder:
model files with no version folder, and a root one level too deep. Real `ferry serve`
processes polling fast; the assertions read their logs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

FAST_POLL = ["--file_system_poll_wait_seconds", "0.1", "--version_settle_seconds", "0.05"]


def polls_pass(seconds: float = 1.0) -> None:
    """Let about ten polls run (the warning must not repeat on each)."""
    time.sleep(seconds)


def test_model_files_without_a_version_folder_are_named_with_the_fix(
    tmp_path: Path, start_server
) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 1)
    # The newcomer's mistake: the files straight in models/m.
    shutil.move(root / "m" / "1" / "model.onnx", root / "m" / "model.onnx")
    (root / "m" / "1").rmdir()
    server = start_server(str(root), *FAST_POLL)
    expected = (
        f"No versions of servable m found under base path {root / 'm'}: {root / 'm'} has no "
        f"version folders (found model.onnx): move them into {root / 'm' / '1'}/"
    )
    wait_until(lambda: expected in server.log(), 10, message="the layout warning")
    polls_pass()
    assert server.log().count(expected) == 1, server.log()
    assert "WARNING" in next(line for line in server.log().splitlines() if expected in line)

    # A change of the folder says it again, with what is there now.
    (root / "m" / "notes.md").write_text("x")
    wait_until(lambda: "(found model.onnx, notes.md)" in server.log(), 10, message="re-warned")

    # Following the advice fixes it: the model serves and readiness follows.
    (root / "m" / "1").mkdir()
    shutil.move(root / "m" / "model.onnx", root / "m" / "1" / "model.onnx")
    server.wait_version("m", 1)
    wait_until(lambda: server.get("/v2/health/ready").status_code == 200, 10, message="ready")


def test_a_folder_without_model_files_or_versions_says_what_is_expected(
    tmp_path: Path, start_server
) -> None:
    root = tmp_path / "models"
    (root / "m" / "v1").mkdir(parents=True)
    server = start_server(str(root), *FAST_POLL)
    expected = (
        f"No versions of servable m found under base path {root / 'm'} (found v1/): expected "
        f"integer version folders such as {root / 'm' / '1'}/ holding the model files"
    )
    wait_until(lambda: expected in server.log(), 10, message="the layout warning")
    polls_pass()
    assert server.log().count(expected) == 1


def test_a_root_that_is_a_version_folder_names_the_folder_to_serve(
    tmp_path: Path, start_server
) -> None:
    """`ferry serve models/m/1`: the version folder's sub-folders (a SavedModel's
    variables/, assets/) would be served as models."""
    models = tmp_path / "models"
    version = write_model(scale_model(2.0), models / "m", 1)
    (version / "variables").mkdir()
    server = start_server(str(version), *FAST_POLL)
    wait_until(lambda: f"model root {version} holds model files" in server.log(), 10)
    log = server.log()
    fix = f"Serve {models}, or name the model: --model_name m --model_base_path {models / 'm'}"
    assert fix in log
    # The sub-folder taken for a model gets the same advice.
    assert (
        f"No versions of servable variables found under base path {version / 'variables'}: "
        f"{version} looks like a version folder" in log
    )
    polls_pass()
    assert server.log().count(f"model root {version} holds model files") == 1
    assert server.get("/v2/health/ready").status_code == 503


def test_a_root_that_is_one_models_folder_names_its_parent(tmp_path: Path, start_server) -> None:
    """`ferry serve models/m`: the version folders would be served as a model named 1."""
    models = tmp_path / "models"
    write_model(scale_model(2.0), models / "m", 1)
    server: FerryProcess = start_server(str(models / "m"), *FAST_POLL)
    expected = (
        f"model root {models / 'm'} holds version folders (1/), so they are served as models "
        f"named 1...: {models / 'm'} looks like one model's folder. Serve {models} (the folder "
        f"of models), or name the model: --model_name m --model_base_path {models / 'm'}"
    )
    wait_until(lambda: expected in server.log(), 10, message="the root warning")
    assert f"{models / 'm' / '1'} looks like a version folder" in server.log()
    polls_pass()
    assert server.log().count(expected) == 1
