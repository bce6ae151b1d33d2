"""The `ferry` command's failures, as a user meets them: each prints one `Error: ...`
line that says what to do and exits 1 (usage errors stay click's 2); a traceback only
with --debug. Every command runs as a child process, as typed at a shell."""

from __future__ import annotations

import json
import socket
import sys
import zipfile
from pathlib import Path

import pytest
from support.cli import last_line, run_ferry
from support.missing_packages import without_packages
from support.models import mlp_model, scale_model, write_model
from support.server import free_port

DEBUG_HINT = " (run with --debug or FERRY_DEBUG=1 for the traceback)"
# A script that adds one command raising an exception no ferry code expects, then runs
# the real `ferry` entry point: the boundary is what is under test, not the command.
BOOM = (
    "import sys, click\n"
    "from ferry.cli import main\n"
    "@main.command()\n"
    "def boom():\n"
    "    raise RuntimeError('boom: nobody foresaw this')\n"
    "sys.argv[0] = 'ferry'\n"
    "main()\n"
)


def _boom(*args: str, env: dict[str, str] | None = None):
    import os
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", BOOM, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_an_unexpected_exception_is_one_line_naming_the_debug_switch() -> None:
    done = _boom("boom", env={"FERRY_DEBUG": ""})  # empty: off
    assert done.returncode == 1
    assert done.stderr == f"Error: unexpected RuntimeError: boom: nobody foresaw this{DEBUG_HINT}\n"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_then_the_same_line(how: str) -> None:
    done = _boom("--debug", "boom") if how == "flag" else _boom("boom", env={"FERRY_DEBUG": "1"})
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert ", in boom\nRuntimeError: boom: nobody foresaw this\n" in done.stderr
    assert last_line(done.stderr) == "Error: unexpected RuntimeError: boom: nobody foresaw this"


def test_a_usage_error_still_exits_2_with_clicks_usage_line() -> None:
    done = run_ferry("serve", "--no_such_flag")
    assert done.returncode == 2
    assert done.stderr.startswith("Usage: ")
    assert last_line(done.stderr) == "Error: No such option '--no_such_flag'."


def test_a_grpc_port_in_use_is_one_line(tmp_path: Path) -> None:
    """Was 45 lines of grpc traceback after the models had loaded."""
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "scale", 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_ferry(
            "serve", str(root), "--host", "127.0.0.1", "--port", str(port),
            "--rest_api_port", str(free_port()), "--file_system_poll_wait_seconds", "0",
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert last_line(done.stderr) == (
        f"Error: gRPC cannot listen on 127.0.0.1:{port}: in use, or not allowed "
        "(--port sets the port; --port 0 turns gRPC off)"
    )


def test_a_rest_port_in_use_ends_with_one_line(tmp_path: Path) -> None:
    """uvicorn logs the bind error; ferry unloads what it loaded and says what to change."""
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "scale", 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_ferry(
            "serve", str(root), "--host", "127.0.0.1", "--rest_api_port", str(port),
            "--port", "0", "--file_system_poll_wait_seconds", "0", timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "address already in use" in done.stderr
    assert last_line(done.stderr) == (
        f"Error: the REST API could not listen on 127.0.0.1:{port} (the log line above "
        "says why; --rest_api_port sets the port)"
    )


def _keras_archive(path: Path) -> Path:
    """A file shaped like a .keras archive (a zip with config.json). Without TensorFlow
    `ferry save` stops before reading it, so its layers do not matter."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
    return path


def test_save_without_tensorflow_names_the_extra(tmp_path: Path) -> None:
    env = without_packages(tmp_path / "absent", "tensorflow", "keras", "tf_keras")
    source = _keras_archive(tmp_path / "model.keras")
    done = run_ferry("save", str(source), str(tmp_path / "out"), env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "Error: Keras models need the Python package 'keras', which cannot be imported "
        "(No module named 'keras'); install it with: pip install 'ferry-serve[tensorflow]'\n"
    )
    assert not list((tmp_path / "out").glob("[0-9]*")), "no version was published"


@pytest.mark.parametrize("verb", ["push", "pull"])
def test_push_and_pull_without_boto3_name_the_extra(verb: str, tmp_path: Path) -> None:
    env = without_packages(tmp_path / "absent", "boto3", "botocore", "s3transfer")
    local = tmp_path / "model.tar.gz"
    local.write_bytes(b"archive")
    args = [str(local), "s3://bucket/key"] if verb == "push" else ["s3://bucket/key", str(local)]
    done = run_ferry(verb, *args, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: s3:// paths need boto3: pip install 'ferry-serve[s3]'\n"


def test_deploy_with_a_role_name_instead_of_an_arn_says_how_to_get_the_arn() -> None:
    """The check comes before any AWS call (the endpoint URL is never contacted)."""
    done = run_ferry(
        "deploy", "sagemaker", "ep", "--model", "s3://bucket/model.tar.gz",
        "--role", "SageMakerRole", "--region", "us-east-1",
        "--endpoint_url", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "Error: --role: 'SageMakerRole' is a role name; give its ARN, "
        "arn:aws:iam::ACCOUNT:role/SageMakerRole (aws iam get-role --role-name "
        "SageMakerRole --query Role.Arn prints it)\n"
    )


@pytest.mark.tensorflow
def test_save_of_a_weights_only_h5_says_what_to_give_instead(tmp_path: Path) -> None:
    import subprocess

    weights = tmp_path / "model.weights.h5"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keras\n"
            "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
            "m.save_weights(sys.argv[1])\n",
            str(weights),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    done = run_ferry("save", str(weights), str(tmp_path / "out"), timeout=180)
    assert done.returncode == 1, done.stderr
    assert last_line(done.stderr) == (
        "Error: model.weights.h5 holds no model (weights only?); save the whole model "
        "with model.save('model.keras'), or give the architecture (model.json from "
        "model.to_json()) with the weights file beside it"
    )
    assert "Traceback" not in done.stderr


def test_optimize_fp16_on_an_int8_version_is_refused_in_one_line(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "mlp"
    write_model(mlp_model(width=8, hidden=64, classes=4), model_dir, 1)
    first = run_ferry("optimize", str(model_dir / "1"), "--precision", "int8", "--force")
    assert first.returncode == 0, first.stderr
    done = run_ferry("optimize", str(model_dir / "2"), "--precision", "fp16")
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"Error: refused: {model_dir / '2'} is already a lower-precision version (its "
        f"optimize.json says it is the int8 variant of {model_dir / '1' / 'model.onnx'}); "
        "build the fp16 variant from the float32 version instead, or pass --force\n"
    )
    forced = run_ferry("optimize", str(model_dir / "2"), "--precision", "fp16", "--force")
    assert forced.returncode == 1
    assert forced.stderr == (
        f"Error: {model_dir / '2' / 'model.onnx'} has no float weights to quantize (no "
        "float32/float64 initializer with more than one element): fp16 would not make it "
        "smaller\n"
    )


def test_a_bundles_run_py_without_an_argument_prints_its_usage(tmp_path: Path) -> None:
    import subprocess

    model = write_model(scale_model(2.0), tmp_path / "scale", 1) / "model.onnx"
    bundle = tmp_path / "bundle"
    assert run_ferry("edge", "bundle", str(model), "-o", str(bundle)).returncode == 0
    done = subprocess.run(
        [sys.executable, str(bundle / "run.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == "usage: python run.py INPUTS (.npy, .npz or TF Serving .json)\n"
