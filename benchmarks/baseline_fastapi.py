"""The baseline: the model server a typical user writes by hand with FastAPI + uvicorn.

Why it exists: ferry's claim is that dynamic batching plus a lean HTTP path beats what
people usually deploy. So this is written the way that usual server looks, not tuned:
a pydantic body model parses TF Serving's ``{"instances": [...]}``, each request calls
``session.run`` on its own (no batching), and ``.tolist()`` builds the response. The
endpoint is a plain ``def``, as FastAPI's docs advise for blocking code, so requests run
concurrently on FastAPI's thread pool. The session uses onnxruntime's defaults, as
``ort.InferenceSession(path)`` gives them. The one concession to fairness: uvicorn's
per-request access log is off, since the benchmark is about serving, not logging.

Run: ``python benchmarks/baseline_fastapi.py MODELS_ROOT --host 127.0.0.1 --port 8000``
(MODELS_ROOT holds ``<name>/<version>/model.onnx``, as ``ferry examples`` builds it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MODELS_ROOT_ENV = "BASELINE_MODELS_ROOT"


class PredictRequest(BaseModel):
    """TF Serving's row format: a list of instances, each a flat list of numbers."""

    instances: list[list[float]]


class PredictResponse(BaseModel):
    predictions: list[list[float]]


def load_sessions(root: Path) -> dict[str, ort.InferenceSession]:
    """One session per model folder under `root`, from its highest numbered version."""
    sessions = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = sorted(
            (p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        if versions and (versions[-1] / "model.onnx").is_file():
            sessions[model_dir.name] = ort.InferenceSession(
                str(versions[-1] / "model.onnx"), providers=["CPUExecutionProvider"]
            )
    return sessions


def create_app(root: Path) -> FastAPI:
    """The FastAPI app serving every model under `root`."""
    app = FastAPI(title="baseline model server")
    sessions = load_sessions(root)

    @app.post("/v1/models/{name}:predict", response_model=PredictResponse)
    def predict(name: str, request: PredictRequest) -> PredictResponse:
        session = sessions.get(name)
        if session is None:
            raise HTTPException(status_code=404, detail=f"model {name} not found")
        x = np.asarray(request.instances, dtype=np.float32)
        input_name = session.get_inputs()[0].name
        (y,) = session.run(None, {input_name: x})
        return PredictResponse(predictions=y.tolist())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=os.environ.get(MODELS_ROOT_ENV))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.root is None:
        parser.error(f"give MODELS_ROOT or set {MODELS_ROOT_ENV}")
    uvicorn.run(
        create_app(Path(args.root)),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
