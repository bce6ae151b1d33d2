"""`ferry save` of a real Keras model prints what ferry did and nothing of TensorFlow's
start-up chatter (absl/C++ log lines, the old "thread settings not applied" warning);
`--debug` shows TensorFlow's lines again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_ferry

from ferry.cli_logging import NATIVE_LOG_LINE
from ferry.cli_progress import start_line

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keras\n"
            "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
            "m.save(sys.argv[1])\n",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def test_save_prints_only_ferrys_line(keras_file: Path, tmp_path: Path) -> None:
    # As a user runs it: no FERRY_DEBUG, no TF_CPP_MIN_LOG_LEVEL of their own (this test
    # process may have set one by importing ferry's TensorFlow runtime).
    quiet = {"FERRY_DEBUG": None, "TF_CPP_MIN_LOG_LEVEL": None}
    done = run_ferry("save", str(keras_file), str(tmp_path / "m"), env=quiet, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {tmp_path / 'm' / '1'}\n"
    # Only the step's start and end lines (ferry.cli_progress, off a terminal).
    step = f"saving {keras_file} into {tmp_path / 'm'} and checking it loads"
    assert done.stderr.splitlines()[0] == start_line(step), done.stderr
    assert done.stderr.splitlines()[1].startswith(f"{step}: done in "), done.stderr
    assert len(done.stderr.splitlines()) == 2, done.stderr


def test_debug_shows_tensorflows_native_lines(keras_file: Path, tmp_path: Path) -> None:
    quiet = {"TF_CPP_MIN_LOG_LEVEL": None}
    done = run_ferry(
        "--debug", "save", str(keras_file), str(tmp_path / "m"), env=quiet, timeout=180
    )
    assert done.returncode == 0, done.stderr
    native = [line for line in done.stderr.splitlines() if NATIVE_LOG_LINE.match(line.encode())]
    assert native, done.stderr
    assert "thread settings" not in done.stderr
