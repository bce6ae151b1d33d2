"""ferry's protobuf messages: the checked-in descriptor set is current and usable.

If the first test fails, a `.proto` file was edited without regenerating the descriptor
set: run `make protos`.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

from ferry.protos import DESCRIPTOR_SET, message_class, pool
from ferry.protos.build import compile_descriptor_set, proto_files


def test_the_checked_in_descriptor_set_matches_a_fresh_compile(tmp_path: Path) -> None:
    fresh = tmp_path / "descriptors.binpb"

    compile_descriptor_set(fresh)

    assert fresh.read_bytes() == DESCRIPTOR_SET.read_bytes(), "run `make protos`"


def test_the_descriptor_set_holds_every_proto_file_and_its_imports() -> None:
    file_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    names = {file.name for file in file_set.file}

    assert {
        "tensorflow_serving/batching/batching_parameters.proto",
        "tensorflow_serving/config/model_server_config.proto",
        "tensorflow/core/framework/tensor.proto",
        "tensorflow_serving/apis/prediction_service.proto",
        "tensorflow_serving/apis/model_service.proto",
        "tensorflow_serving/apis/prediction_log.proto",
    } <= {p.relative_to(DESCRIPTOR_SET.parent).as_posix() for p in proto_files()}
    assert {p.relative_to(DESCRIPTOR_SET.parent).as_posix() for p in proto_files()} <= names
    assert names >= {
        "tensorflow_serving/batching/batching_parameters.proto",
        "tensorflow_serving/config/model_server_config.proto",
        "google/protobuf/any.proto",
        "google/protobuf/wrappers.proto",
    }


def test_model_server_config_parses_tf_serving_text_format() -> None:
    message = message_class("tensorflow.serving.ModelServerConfig")()

    text_format.Parse(
        """
        model_config_list {
          config {
            name: "m"
            base_path: "/models/m"
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: "stable" value: 1 }
          }
        }
        """,
        message,
        descriptor_pool=pool(),
    )

    (config,) = message.model_config_list.config
    assert config.name == "m"
    assert list(config.model_version_policy.specific.versions) == [1, 2]
    assert dict(config.version_labels) == {"stable": 1}
    assert message_class("tensorflow.serving.ModelServerConfig") is type(message)


def test_batching_parameters_round_trip_through_the_binary_format() -> None:
    cls = message_class("tensorflow.serving.BatchingParameters")
    message = cls()
    message.max_batch_size.value = 128
    message.allowed_batch_sizes.extend([32, 128])

    decoded = cls.FromString(message.SerializeToString())

    assert decoded.HasField("max_batch_size")
    assert not decoded.HasField("batch_timeout_micros")
    assert decoded.max_batch_size.value == 128
    assert list(decoded.allowed_batch_sizes) == [32, 128]
    assert cls.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
