"""ferry's protobuf messages, built from the checked-in descriptor set.

The `.proto` files beside this module use TensorFlow Serving's package names and
field numbers, so existing configs and clients work unchanged. The messages live
in a private descriptor pool rather than protobuf's global one: a user process may
also import the official `tensorflow-serving-api` package, whose files register the
same symbol names, and the global pool refuses duplicates.

`descriptors.binpb` is produced by `make protos` (protoc with `--include_imports`);
`tests/test_protos.py` checks that it matches the `.proto` files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PROTO_DIR = Path(__file__).parent
DESCRIPTOR_SET = PROTO_DIR / "descriptors.binpb"


@cache
def pool() -> descriptor_pool.DescriptorPool:
    """The private pool holding every ferry message and the well-known types it imports."""
    file_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    private_pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        private_pool.Add(file_proto)
    return private_pool


@cache
def message_class(full_name: str) -> type[Message]:
    """The message class for a full protobuf name such as `tensorflow.serving.ModelConfig`."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))
