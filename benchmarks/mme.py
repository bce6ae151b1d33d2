"""Multi-model endpoint benchmark: first-invoke latency (download + unpack + load) against
warm invokes, and least-recently-used eviction under a memory budget.

50 small ONNX models (ferry's mlp_small example, about 800 KB each, seeded apart;
packed by `ferry package` into `mNN.tar.gz`) sit in moto's S3 (server mode, its own
process on 127.0.0.1). One `ferry serve --sagemaker` with SAGEMAKER_MULTI_MODEL=true
serves them by TargetModel (`X-Amzn-SageMaker-Target-Model` on /invocations), with
`--max_loaded_models_bytes` holding about ten of them, so invoking all 50 in turn evicts 40:

1. cold: the first invoke of each model (fetch from S3, unpack, load, warm up, run);
2. warm: an invoke of a model that is loaded (the ten most recent), repeated;
3. churn: a second pass over all 50 in the same order, each a cold load again, since
   the least recently used are the ones evicted; ferry's log counts the evictions.

Bounded: 50 models, `--warm-rounds` (default 20) rounds of ten warm invokes, every
request with a 30 s timeout. Usage::

    .venv/bin/python benchmarks/mme.py            # 50 models
    .venv/bin/python benchmarks/mme.py --models 20 --warm-rounds 5

The report is printed and written to benchmarks/results/mme.md (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from deploy import CREDENTIALS, moto_store, request  # noqa: E402
from servers import HOST, free_port, running_server  # noqa: E402

from ferry.deploy.package import package  # noqa: E402
from ferry.examples import mlp_small  # noqa: E402

BUCKET = "mme-bench"
LOADED_AT_ONCE = 10
REQUEST_TIMEOUT_S = 30.0


def build_archives(work: Path, store, count: int) -> int:
    """`count` archives in s3://BUCKET/models/; returns one model's file size."""
    store.create_bucket(Bucket=BUCKET)
    size = 0
    for index in range(count):
        folder = work / f"m{index:02d}"
        (folder / "1").mkdir(parents=True)
        model = mlp_small(seed=index)
        (folder / "1" / "model.onnx").write_bytes(model.SerializeToString())
        size = (folder / "1" / "model.onnx").stat().st_size
        packed = package(folder, work / "archives" / f"m{index:02d}.tar.gz")
        store.upload_file(str(packed.archive), BUCKET, f"models/m{index:02d}.tar.gz")
    return size


def invoke(port: int, target: str) -> float:
    """Seconds for one TargetModel invoke; raises on a non-200 answer."""
    body = json.dumps({"instances": [[0.5] * 784]}).encode()
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": target}
    started = time.perf_counter()
    status, answer = request(port, "POST", "/invocations", body, headers)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"{target}: HTTP {status}: {answer[:300]!r}")
    return elapsed


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p95:.1f} | {max(ms):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--warm-rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with moto_store(work / "moto.log") as (moto, store):
            size = build_archives(work, store, args.models)
            budget = int(size * (LOADED_AT_ONCE + 0.5))
            port = free_port()
            argv = [
                sys.executable, "-m", "ferry.cli", "serve", "--sagemaker",
                "--host", HOST, "--rest_api_port", str(port), "--port", "0",
                "--sagemaker_multi_model_dir", str(work / "models"),
                "--sagemaker_model_data_url", f"s3://{BUCKET}/models/",
                "--model_cache_dir", str(work / "cache"),
                "--max_loaded_models_bytes", str(budget),
            ]  # fmt: skip
            (work / "models").mkdir()
            env = {
                **os.environ,
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": f"http://{HOST}:{moto.port}",
                "SAGEMAKER_MULTI_MODEL": "true",
            }
            with running_server("ferry", argv, port, work / "ferry.log", None, env) as server:
                targets = [f"m{i:02d}.tar.gz" for i in range(args.models)]
                cold = [invoke(port, t) for t in targets]
                recent = targets[-LOADED_AT_ONCE:]
                warm = [invoke(port, t) for _ in range(args.warm_rounds) for t in recent]
                churn = [invoke(port, t) for t in targets]
                loaded = json.loads(request(port, "GET", "/models")[1])
                evictions = server.log_path.read_text().count("evicting ")
    lines = [
        f"# Multi-model endpoint: {args.models} ONNX models of {size / 1024:.0f} KB, "
        f"budget {budget / 1024:.0f} KB (~{LOADED_AT_ONCE} models)",
        "",
        "| invoke | n | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        summary("cold (S3 download + unpack + load + run)", cold),
        summary("warm (loaded)", warm),
        summary("after eviction (cold again)", churn),
        "",
        f"Evictions: {evictions}; loaded at the end: {len(loaded)} models.",
    ]
    report = "\n".join(lines)
    print(report)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "mme.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
