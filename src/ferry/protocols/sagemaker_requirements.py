"""`code/requirements.txt` of a SageMaker model, installed at start-up as the SageMaker
TensorFlow Serving container installs it, but only with the operator's consent.

The container runs `pip3 install -r code/requirements.txt` into the image's own
site-packages before it starts, unless `code/lib/` exists (then it logs that it ignores
the file). Installing a package runs its build code with the server's permissions, so
ferry installs only when the operator allows it, separately from allowing
`inference.py`: `ferry serve --allow_requirements` or, in SageMaker mode,
FERRY_ALLOW_REQUIREMENTS=true in the container's environment (`ferry deploy sagemaker
--allow-requirements` sets it). Without that consent ferry logs that it did not install
and goes on: the packages may already be in the image.

Where: never the system's site-packages and never the model folder (/opt/ml/model is
read-only), but a folder ferry owns under the model cache (`--model_cache_dir`),
named by the file's content, so a restart with the same file reuses it. The folder is
filled under a temporary name and renamed when pip succeeded, so a crash never leaves
a half-installed folder that a later start would trust. pip gets
`--sagemaker_requirements_timeout_seconds`; a failure or a timeout stops start-up
with pip's last lines, as the container stops.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path("code") / "requirements.txt"
REQUIREMENTS_FLAG = "--allow_requirements"
REQUIREMENTS_ENV = "FERRY_ALLOW_REQUIREMENTS"
TIMEOUT_FLAG = "--sagemaker_requirements_timeout_seconds"
DEFAULT_TIMEOUT_SECONDS = 600.0
# pip's last output lines in a start-up error: enough to show which package failed.
_ERROR_TAIL_CHARS = 2000


class RequirementsError(RuntimeError):
    """pip failed or ran past its time: start-up stops, as the container stops."""


def install_requirements(
    model_dir: Path, cache_dir: Path, allowed: bool, timeout_seconds: float
) -> Path | None:
    """Install `model_dir/code/requirements.txt` and return the folder to put on
    `sys.path`; None when there is nothing to install (no file, `code/lib/` present, or
    no consent: each logged). Raises RequirementsError when pip fails or times out."""
    requirements = model_dir / REQUIREMENTS_FILE
    if not requirements.is_file():
        return None
    if (model_dir / "code" / "lib").is_dir():
        log.warning("loading modules in %s, ignoring requirements.txt", model_dir / "code" / "lib")
        return None
    if not allowed:
        log.warning(
            "%s not installed: installing packages runs their code, so ferry installs them "
            "only when the operator allows it (ferry serve %s, or %s=true in SageMaker "
            "mode); they must be in the image already",
            requirements,
            REQUIREMENTS_FLAG,
            REQUIREMENTS_ENV,
        )
        return None
    content = requirements.read_bytes()
    target = cache_dir / "sagemaker-requirements" / hashlib.sha256(content).hexdigest()[:16]
    if target.is_dir():
        log.info("%s: already installed in %s", requirements, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=target.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(staging),
        "-r",
        str(requirements),
    ]
    log.info("installing %s into %s (up to %.0fs)", requirements, target, timeout_seconds)
    try:
        done = subprocess.run(
            command,
            cwd=requirements.parent,  # relative paths in the file mean the code folder
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise RequirementsError(
            f"pip install -r {requirements} did not finish in {timeout_seconds:g}s ({TIMEOUT_FLAG})"
        ) from None
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = (done.stdout + done.stderr).decode("utf-8", "replace")[-_ERROR_TAIL_CHARS:]
        raise RequirementsError(
            f"failed to install required packages from {requirements} "
            f"(pip exited {done.returncode}):\n{output}"
        )
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another process installed it first
    log.info("installed %s into %s", requirements, target)
    return target
