"""Compile the `.proto` files into `descriptors.binpb` (run by `make protos`).

Uses protoc from `grpcio-tools`, with `--include_imports` so the set also carries the
well-known types the messages use.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).parent


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def compile_descriptor_set(output: Path) -> None:
    """Run protoc over every `.proto` file under this package, writing `output`."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    # protoc runs in a child process: in a process that has imported TensorFlow (the
    # compat tests do), TF's bundled protobuf symbols make grpc_tools' in-process
    # compiler crash with a segmentation fault.
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        "--include_imports",
        f"--descriptor_set_out={output}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files()),
    ]
    if subprocess.run(args, check=False).returncode != 0:
        raise RuntimeError("protoc failed")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "descriptors.binpb"
        compile_descriptor_set(fresh)
        (PROTO_DIR / "descriptors.binpb").write_bytes(fresh.read_bytes())
    print(f"wrote {PROTO_DIR / 'descriptors.binpb'}", file=sys.stderr)


if __name__ == "__main__":
    main()
