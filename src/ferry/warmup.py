"""Warm-up: run a new version once before it takes traffic.

The first run of a model pays for lazy allocation and kernel selection; doing it
at load keeps that cost out of a user's request. A version folder may carry
recorded requests in `assets.extra/warmup_requests.jsonl` (one TF Serving REST
`:predict` body per line); otherwise ferry generates one row of inputs from each
signature. A warm-up failure is a load failure: the version never serves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from ferry.codecs.tfserving_json import decode_predict_body
from ferry.runtimes import Runtime
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec

WARMUP_FILE = Path("assets.extra") / "warmup_requests.jsonl"
# TF Serving caps recorded warm-up requests at 1000; so does ferry.
MAX_WARMUP_REQUESTS = 1000


def warm_up(runtime: Runtime) -> int:
    """Run the recorded or generated warm-up requests; returns how many ran."""
    recorded = runtime.version_dir / WARMUP_FILE
    if recorded.is_file():
        return _replay(runtime, recorded)
    for name, signature in runtime.signatures.items():
        runtime.run(name, generated_inputs(signature))
    return len(runtime.signatures)


def _replay(runtime: Runtime, path: Path) -> int:
    count = 0
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if count >= MAX_WARMUP_REQUESTS:
            break
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{WARMUP_FILE} line {line_number}: {exc}") from None
        request = decode_predict_body(body, runtime.signatures)
        runtime.run(request.signature_name, request.inputs)
        count += 1
    return count


def generated_inputs(signature: Signature, rows: int = 1) -> dict[str, np.ndarray]:
    """Deterministic inputs that fit `signature`: dynamic dimensions become `rows` or 1."""
    rng = np.random.default_rng(0)
    return {name: _example(spec, rows, rng) for name, spec in signature.inputs.items()}


def _example(spec: TensorSpec, rows: int, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(
        (rows if axis == 0 else 1) if dim == -1 else dim
        for axis, dim in enumerate(spec.shape or (rows,))
    )
    if spec.dtype == STRING_DTYPE:
        return np.full(shape, b"", dtype=object)
    if spec.dtype.kind == "f":
        return rng.random(shape).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return np.zeros(shape, dtype=bool)
    # Integer inputs are often indices (token ids, categories): zero is always valid.
    return np.zeros(shape, dtype=spec.dtype)
