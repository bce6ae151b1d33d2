"""The floor under any Python gRPC server here: grpcio's own cost per call.

A grpc.aio server on uvloop (ferry's gRPC stack) whose one handler returns a fixed
response without parsing the request, loaded by h2load with mlp_small's real
`PredictRequest` bytes, exactly as `make bench` loads ferry's TF Serving gRPC port: c64
as 64 connections with one stream each, and as 4 connections x 16 streams. Whatever
ferry does per call (parse, batch, run, encode) comes on top of this figure, so it
bounds what any grpcio-based server can serve on this machine. `make bench` compares
ferry's gRPC to its own REST JSON figure; this script tells how far the stack alone gets.

Usage::

    .venv/bin/python benchmarks/grpc_floor.py [--duration 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import GRPC_HEADERS, grpc_frame, instance_values, run_h2load  # noqa: E402
from servers import HOST, free_port, running_server  # noqa: E402

from ferry.codecs.tensor_proto import encode_tensor  # noqa: E402
from ferry.protos import message_class  # noqa: E402

WIDTH = 784  # mlp_small's input
NO_OP_SERVER = """
import asyncio, sys
import grpc, uvloop

REPLY = bytes(16)

async def reply(request, context):
    return REPLY

class AnyMethod(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(reply)  # bytes in, bytes out

async def main(address):
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()

uvloop.install()
asyncio.run(main(sys.argv[1]))
"""


def request_frame() -> bytes:
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "mlp_small"
    row = instance_values(WIDTH).reshape(1, -1)
    encode_tensor(row, "input", into=request.inputs["input"], tensor_content=True)
    return grpc_frame(request.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per h2load run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ferry-grpc-floor-") as tmp:
        folder = Path(tmp)
        body = folder / "request.bin"
        body.write_bytes(request_frame())
        port = free_port()
        argv = [sys.executable, "-c", NO_OP_SERVER, f"{HOST}:{port}"]
        with running_server("no-op grpc.aio", argv, port, folder / "server.log", None):
            url = f"http://{HOST}:{port}/tensorflow.serving.PredictionService/Predict"
            print("| load (h2load) | calls/s | p50 ms | p99 ms | errors |")
            print("|---|---:|---:|---:|---:|")
            for connections, streams in ((64, 1), (4, 16)):
                result = run_h2load(
                    url, body, GRPC_HEADERS, connections, streams, args.duration, folder / "log"
                )
                errors = result.socket_errors + result.status_errors
                print(
                    f"| {connections} connections x {streams} streams "
                    f"| {result.requests_per_s:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} "
                    f"| {errors} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
