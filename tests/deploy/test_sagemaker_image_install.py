"""The SageMaker image, checked without a Docker engine: the repository's `Dockerfile` is
read (its ARG defaults, ENV, WORKDIR, COPY and `RUN pip install` steps, so the test
follows the file), its install steps run in a fresh virtual environment from the
package index this machine uses, and the installed ferry serves a TF1 SavedModel made
with the seed's SageMaker recipe (`SavedModelBuilder` + `predict_signature_def`, in the
`export/Servo/1` layout) as the image would: the image's environment, `ferry serve`,
/ping 200 and a correct /invocations.

Bounded: the install gets INSTALL_SECONDS (measured: 3 to 5 minutes on a busy 2-core
machine, mostly TensorFlow's download and unpacking), the server SERVE_SECONDS; the whole
test at most TEST_SECONDS (20 minutes). It is marked `slow` and `tensorflow`, which
select but never skip: it runs in `make test`, as in CI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from support.fresh_venv import package_source
from support.server import FerryProcess, wait_until

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
INSTALL_SECONDS = 900
SERVE_SECONDS = 180
TEST_SECONDS = INSTALL_SECONDS + SERVE_SECONDS + 120


@dataclass
class ImageSteps:
    """What `docker build` would do with a Dockerfile, as far as the test needs."""

    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    pip_installs: list[list[str]] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def read_dockerfile(path: Path) -> ImageSteps:
    """The steps of `path` (continuation lines joined, comments dropped); `${ARG}` and
    `$ARG` are replaced by the ARG defaults (an ARG without one is empty)."""
    steps = ImageSteps()
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), _substitute(rest.strip(), steps.args)
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            steps.args[name] = default
        elif keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                steps.env[name] = value
        elif keyword == "WORKDIR":
            steps.workdir = rest
        elif keyword == "COPY":
            parts = shlex.split(rest)
            steps.copies.append((parts[:-1], parts[-1]))
        elif keyword == "RUN":
            for command in rest.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    steps.pip_installs.append(words[2:])
        elif keyword in ("ENTRYPOINT", "CMD"):
            setattr(steps, keyword.lower(), json.loads(rest))
        elif keyword == "EXPOSE":
            steps.exposed.extend(rest.split())
        elif keyword == "LABEL":
            steps.labels.append(rest)
    return steps


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def stage_context(steps: ImageSteps, context: Path) -> Path:
    """The COPY steps into `context` (the image's WORKDIR); returns that folder."""
    for sources, dest in steps.copies:
        target = context / dest if not dest.startswith("/") else context / dest.lstrip("/")
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(
                    origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    return context


# -- what the image is (fast: reads the file) ------------------------------------------------


def test_the_default_image_installs_tensorflow_onnx_and_aws() -> None:
    steps = read_dockerfile(DOCKERFILE)
    (install,) = steps.pip_installs
    (target,) = [arg for arg in install if arg.startswith(".")]
    extras = set(re.fullmatch(r"\.\[(.*)\]", target)[1].split(","))
    assert {"tensorflow", "aws"} <= extras
    # ONNX needs no extra: onnxruntime is one of ferry's own dependencies.
    assert '"onnxruntime' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("variant", ["Dockerfile.gpu"])
def test_the_gpu_variant_swaps_onnxruntime_for_the_gpu_build(variant: str) -> None:
    text = (REPO / variant).read_text()
    assert "onnxruntime-gpu" in text and "tensorrt" in text
    assert text.index("pip uninstall -y onnxruntime") < text.index("onnxruntime-gpu tensorrt")


def test_gpu_instance_types_default_to_the_gpu_image() -> None:
    from ferry.deploy.sagemaker import ferry_version, image_tag

    assert image_tag("ml.m5.xlarge") == ferry_version()
    assert image_tag("ml.c7i.2xlarge") == ferry_version()
    for gpu in ("ml.g5.xlarge", "ml.g6e.12xlarge", "ml.p4d.24xlarge"):
        assert image_tag(gpu) == f"{ferry_version()}-gpu"


# -- the install steps, run (slow) -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.timeout(TEST_SECONDS)
def test_the_images_install_steps_serve_a_tf1_savedmodel(tmp_path: Path) -> None:
    from support.tf1_models import sagemaker_scores, save_sagemaker_recipe

    deadline = time.monotonic() + INSTALL_SECONDS
    steps = read_dockerfile(DOCKERFILE)
    context = stage_context(steps, tmp_path / "context")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Nothing of this checkout may leak in: the venv's ferry is the one installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in steps.pip_installs:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *package_source(), *args],
            cwd=context,
            env=env,
            check=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
    probe = "import ferry, onnxruntime, tensorflow; print(ferry.__file__)"
    where = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv))

    model_dir = tmp_path / "opt-ml-model"
    save_sagemaker_recipe(model_dir / "export" / "Servo" / "1")
    image_env = {**steps.env, "PYTHONPATH": ""}
    # `ferry serve` as the entrypoint runs it; FERRY_SAGEMAKER=true from the image's ENV.
    process = FerryProcess(
        ["--sagemaker_model_dir", str(model_dir)],
        tmp_path / "ferry.log",
        env=image_env,
        cwd=tmp_path,
        port_env="SAGEMAKER_BIND_TO_PORT",
        python=python,
    )
    try:
        process.wait_ready(timeout=SERVE_SECONDS)
        wait_until(lambda: process.get("/ping").status_code == 200, 60, message="/ping 200")
        x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], dtype=np.float32)
        response = process.post(
            "/invocations",
            data=json.dumps({"instances": x.tolist()}),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            np.array(response.json()["predictions"]), sagemaker_scores(x), rtol=1e-6
        )
        csv = process.post("/invocations", data="1,2,3\n", headers={"Content-Type": "text/csv"})
        assert csv.status_code == 200, csv.text
        np.testing.assert_allclose(csv.json()["predictions"], sagemaker_scores(x[:1]), rtol=1e-6)
    finally:
        process.stop()
