"""`ferry edge bundle`: a self-contained folder to copy to a device.

The folder holds the lite model, its signature.json, a copy of this package as
`ferry_edge/` (numpy and one runtime are all it needs) and `run.py`, a short runner:
`python run.py inputs.npy` prints `{"outputs": ...}` as JSON, as `ferry edge predict`
does. It is written to a staging folder and renamed, so a half-written bundle never
exists under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .model import SIGNATURE_FILE, find_model_file, load

# The package's modules a bundle carries (not the command-line or bundling code).
_RUNTIME_MODULES = (
    "__init__.py",
    "inputs.py",
    "model.py",
    "onnx_backend.py",
    "signature.py",
    "tflite_backend.py",
)

RUNNER = '''"""Run the bundled model: python run.py INPUTS (.npy, .npz or TF Serving .json).

Needs numpy and {runtime} only. Prints {{"outputs": {{name: values}}}} as JSON, as
`ferry edge predict` does; bad inputs exit 1 with one line saying why.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the ferry_edge copy beside this script, even under -I

import ferry_edge  # noqa: E402

if len(sys.argv) != 2:
    sys.exit("usage: python run.py INPUTS (.npy, .npz or TF Serving .json)")
model = ferry_edge.load(HERE)
try:
    inputs = ferry_edge.read_inputs(Path(sys.argv[1]), model.input_names)
    outputs = model.predict(inputs)
except (ValueError, FileNotFoundError) as exc:
    sys.exit(f"error: {{exc}}")
print(json.dumps(ferry_edge.outputs_document(outputs)))
'''


def write_bundle(model: Path, target: Path) -> Path:
    """Write the bundle for `model` (a .tflite/.ort/.onnx file or a folder holding one) to
    the folder `target`, which must not exist yet. The model is loaded first, so a model
    that does not run here is never bundled."""
    model = Path(model)
    model_file = find_model_file(model) if model.is_dir() else model
    loaded = load(model_file)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        shutil.copy2(model_file, staging / f"model{model_file.suffix.lower()}")
        (staging / SIGNATURE_FILE).write_text(
            json.dumps(loaded.signature.to_json(), indent=2) + "\n"
        )
        package = staging / "ferry_edge"
        package.mkdir()
        here = Path(__file__).resolve().parent
        for name in _RUNTIME_MODULES:
            shutil.copy2(here / name, package / name)
        runtime = "ai-edge-litert" if model_file.suffix.lower() == ".tflite" else "onnxruntime"
        (staging / "run.py").write_text(RUNNER.format(runtime=runtime))
        (staging / "requirements.txt").write_text(f"numpy\n{runtime}\n")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
