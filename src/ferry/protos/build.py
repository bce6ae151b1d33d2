"""Compile the `.proto` files into `descriptors.binpb` (run by `make protos`).

Uses protoc from `grpcio-tools`, with `--include_imports` so the set also carries the
well-known types the messages use.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).parent


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def compile_descriptor_set(output: Path) -> None:
    """Run protoc over every `.proto` file under this package, writing `output`."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        "--include_imports",
        f"--descriptor_set_out={output}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "descriptors.binpb"
        compile_descriptor_set(fresh)
        (PROTO_DIR / "descriptors.binpb").write_bytes(fresh.read_bytes())
    print(f"wrote {PROTO_DIR / 'descriptors.binpb'}", file=sys.stderr)


if __name__ == "__main__":
    main()
