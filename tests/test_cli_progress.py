"""Every slow `ferry` step shows progress on stderr (issue 15), run as a user runs it:
the CLI as a child process. Off a terminal a step prints one line when it starts and one
with its duration when it ends, and nothing else (no carriage returns, no escapes); on a
terminal rich draws a spinner with the step's name and elapsed time. Standard output
keeps only what the verb produced, in both cases; `--quiet` silences the steps; `ferry
serve` logs when each model load starts and how long it took."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_ferry
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.cli_progress import ANNOUNCE_AFTER_ENV, end_line, start_line

# Without the variables by which rich (and so ferry) would take a pipe for a terminal or
# the reverse; every step announced at once, however quick (the tests' models are small).
PLAIN_ENV: dict[str, str | None] = {
    "FORCE_COLOR": None,
    "TTY_INTERACTIVE": None,
    "TTY_COMPATIBLE": None,
    "FERRY_DEBUG": None,
    ANNOUNCE_AFTER_ENV: "0",
}
END = re.compile(r"^(?P<step>.+): (?P<how>done in|failed after) (?:\d+\.\d s|\d+m\d\ds)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def steps(stderr: str) -> list[str]:
    """The steps announced on a non-terminal stderr, in the order they started, after
    checking that each one started, then ended (done) with its duration, and that every
    step line is plain text. Other stderr lines (a framework's logging) are ignored."""
    assert "\r" not in stderr and "\x1b" not in stderr, repr(stderr)
    started: list[str] = []
    running: list[str] = []
    for line in stderr.splitlines():
        ended = END.match(line)
        if ended:
            assert running and ended["step"] == running[-1], (line, running)
            assert ended["how"] == "done in", line
            running.pop()
        elif line.endswith(" ...") and line == start_line(line[: -len(" ...")]):
            running.append(line[: -len(" ...")])
            started.append(line[: -len(" ...")].strip())
    assert not running, f"steps that never ended: {running}\n{stderr}"
    return started


def ferry(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    done = run_ferry(*args, env={**PLAIN_ENV, **(env or {})}, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """`ferry examples` run once: its model root (mlp_small, ONNX) and what it printed."""
    root = tmp_path_factory.mktemp("progress") / "models"
    return root, ferry("examples", "--only", "mlp_small", str(root))


def test_examples_announces_the_build_and_prints_only_paths(built) -> None:
    root, done = built
    assert steps(done.stderr) == [f"building the example models under {root}"]
    assert done.stdout == f"wrote {root / 'mlp_small' / '1'}\n"


def test_save_announces_the_save_and_its_load_check(built, tmp_path: Path) -> None:
    root, _ = built
    source = root / "mlp_small" / "1" / "model.onnx"
    done = ferry("save", str(source), str(tmp_path / "m"))
    assert steps(done.stderr) == [f"saving {source} into {tmp_path / 'm'} and checking it loads"]
    assert done.stdout == f"wrote {tmp_path / 'm' / '1'}\n"


def test_lite_announces_the_conversion(built, tmp_path: Path) -> None:
    root, _ = built
    version = root / "mlp_small" / "1"
    done = ferry("lite", str(version), "-o", str(tmp_path / "model.ort"))
    assert steps(done.stderr) == [f"converting {version} to model.ort and checking its outputs"]
    assert done.stdout.startswith(f"wrote {tmp_path / 'model.ort'} (")
    assert "converting" not in done.stdout


def test_optimize_ends_its_step_before_the_table_and_nests_the_evaluation(
    built, tmp_path: Path
) -> None:
    root, _ = built
    model = root / "mlp_small"
    done = ferry("optimize", str(model), "--precision", "int8", "-o", str(tmp_path / "int8"))
    assert steps(done.stderr) == [
        f"building the int8 variant of {model} and comparing them",
        "evaluating",
    ]
    assert "  evaluating ..." in done.stderr.splitlines(), "nested under the whole step"
    assert "original vs candidate" in done.stdout
    assert done.stdout.endswith(f"wrote {tmp_path / 'int8'}\n")
    assert "evaluating" not in done.stdout and "comparing them" not in done.stdout


def test_package_then_push_announce_packing_listing_and_uploading(
    built,
    tmp_path: Path,
    moto_s3: MotoS3,  # noqa: F811
) -> None:
    root, _ = built
    archive = tmp_path / "model.tar.gz"
    packed = ferry("package", str(root / "mlp_small"), "-o", str(archive))
    assert steps(packed.stderr) == [f"packing {root / 'mlp_small'} into {archive}"]
    assert packed.stdout.splitlines()[0].startswith(f"wrote {archive} (")
    assert len(packed.stdout.splitlines()) == 2  # and the sha256 line

    moto_s3.client.create_bucket(Bucket="deploy")
    size = archive.stat().st_size + len(Path(f"{archive}.sha256").read_bytes())
    pushed = ferry("push", str(archive), "s3://deploy/m/", env=moto_s3.env)
    announced = steps(pushed.stderr)
    assert announced[0] == "listing s3://deploy/m/ and comparing it with the local files"
    assert re.fullmatch(r"uploading 2 files \(\d+\.\d [KM]iB\)", announced[1]), announced
    assert announced[2:] == []
    assert pushed.stdout == f"uploaded 2 files ({size} bytes)\n"

    quiet = ferry("push", "--quiet", str(archive), "s3://deploy/again/", env=moto_s3.env)
    assert quiet.stderr == ""
    assert quiet.stdout == f"uploaded 2 files ({size} bytes)\n"


def test_a_step_quicker_than_the_delay_leaves_no_line(built, tmp_path: Path) -> None:
    root, _ = built
    version = root / "mlp_small" / "1"
    # Building mlp_small takes about 0.1 s: under the default 2 s, so nothing at all.
    quick = ferry("examples", "--only", "mlp_small", str(tmp_path), env={ANNOUNCE_AFTER_ENV: None})
    assert quick.stderr == ""
    assert quick.stdout == f"wrote {tmp_path / 'mlp_small' / '1'}\n"
    # The ORT conversion and its check take seconds: announced once past 0.3 s.
    slow = ferry(
        "lite", str(version), "-o", str(tmp_path / "m.ort"), env={ANNOUNCE_AFTER_ENV: "0.3"}
    )
    assert steps(slow.stderr) == [f"converting {version} to m.ort and checking its outputs"]


def test_a_failed_step_says_how_long_it_ran_before_the_error(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"not an onnx model")
    done = run_ferry(
        "lite", str(tmp_path / "1"), "-o", str(tmp_path / "m.ort"), env=PLAIN_ENV, timeout=120
    )
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    step = f"converting {tmp_path / '1'} to m.ort and checking its outputs"
    assert lines[0] == start_line(step)
    failed = [line for line in lines if END.match(line)]
    assert len(failed) == 1 and failed[0].startswith(f"{step}: failed after "), lines
    assert lines[-1].startswith("Error: ")
    assert done.stdout == ""


def run_with_terminal_stderr(*args: str, timeout: float = 120) -> tuple[str, str]:
    """`ferry ARGS` with stderr on a pseudo-terminal and stdout on a pipe: (stdout, what
    the terminal received, escapes included)."""
    import pty

    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.update({name: value for name, value in PLAIN_ENV.items() if value is not None})
    for name in (name for name, value in PLAIN_ENV.items() if value is None):
        env.pop(name, None)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferry.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=env,
        )
    finally:
        os.close(terminal)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([controller], [], [], 0.5)
            if not readable:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            received += chunk
        stdout, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, received.decode(errors="replace")
    return stdout.decode(), received.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_on_a_terminal_a_spinner_shows_the_step_and_its_elapsed_time(tmp_path: Path) -> None:
    root = tmp_path / "models"
    stdout, screen = run_with_terminal_stderr("examples", "--only", "mlp_small", str(root))
    step = f"building the example models under {root}"
    assert "\x1b[?25l" in screen, "a live display (it hides the cursor while it draws)"
    frames = [ANSI.sub("", part).strip() for part in screen.split("\r")]
    spinning = [f for f in frames if f.startswith(tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")) and step in f]
    assert spinning, screen
    assert re.search(r"\d+\.\d s$", spinning[0]), spinning[0]
    assert any(END.match(f) and f.startswith(f"{step}: done in ") for f in frames), frames
    assert stdout == f"wrote {root / 'mlp_small' / '1'}\n", "no escapes on stdout"


def test_serve_logs_each_first_load_and_its_duration(built, start_server, tmp_path) -> None:
    root, _ = built
    broken = tmp_path / "models"
    (broken / "broken" / "1").mkdir(parents=True)
    (broken / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    shutil.copytree(root / "mlp_small", broken / "mlp_small")
    server = start_server(str(broken))
    log = server.log()
    for name in ("mlp_small", "broken"):
        assert re.search(rf"model {name}: loading version 1 from ", log), log
    assert re.search(r"model mlp_small: version 1 AVAILABLE \(.+, \d+\.\d\ds\)", log), log
    assert re.search(r"model broken: version 1 failed to load after \d+\.\d\ds: ", log), log
    assert re.search(r"first load of every configured model tried in \d+\.\ds", log), log
    loading = log.index("model mlp_small: loading version 1")
    assert loading < log.index("model mlp_small: version 1 AVAILABLE")
    assert log.index("first load of every configured model tried") < log.index("REST API on")


def test_the_end_line_is_the_start_lines_step_with_a_duration() -> None:
    assert END.match(end_line("packing m", 4.25))["step"] == "packing m"
    assert end_line("packing m", 185) == "packing m: done in 3m05s"
    assert end_line("packing m", 0.5, ok=False) == "packing m: failed after 0.5 s"
