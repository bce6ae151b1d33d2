"""A Triton model repository served as it is: config.pbtxt read, reported back through
tritonclient (HTTP and gRPC) as Triton reports it, applied to batching and versions, and
the classification extension, against a real `ferry serve` of a repository the test
builds (support/triton_repository.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.grpc.model_config_pb2 as mc
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from support.server import FerryProcess, wait_until
from support.triton_repository import IMAGE, LABELS, write_triton_repository
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.compat

MODELS = ("simple", "simple_int8", "simple_string", "simple_identity", "classifier", "reshaped")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("triton_repository")
    write_triton_repository(root)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root)], log).wait_ready()
    for model in MODELS:
        server.wait_version(model, 1)
    server.wait_version("simple", 2)
    yield server
    server.stop()


def http(server: FerryProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def grpc(server: FerryProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=server.grpc_target)


# -- the config as read -----------------------------------------------------------------


def test_http_config_reports_the_file(server: FerryProcess) -> None:
    config = http(server).get_model_config("simple")

    assert config["name"] == "simple"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 8
    assert config["version_policy"] == {"all": {}}
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [o["name"] for o in config["output"]] == ["OUTPUT0", "OUTPUT1"]
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [4, 8]
    assert batching["max_queue_delay_microseconds"] == 100
    assert batching["default_queue_policy"]["max_queue_size"] == 32
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]


def test_grpc_config_reports_the_file(server: FerryProcess) -> None:
    config = grpc(server).get_model_config("classifier").config

    assert config.max_batch_size == 0
    assert config.input[0].format == mc.ModelInput.FORMAT_NCHW
    assert list(config.input[0].dims) == list(IMAGE)
    assert config.output[0].label_filename == "labels.txt"
    assert config.WhichOneof("scheduling_choice") is None  # no dynamic_batching: as written


def test_partial_config_is_completed_from_the_model(server: FerryProcess) -> None:
    config = http(server).get_model_config("simple_identity")

    assert config["platform"] == "onnxruntime_onnx"
    assert (config["input"][0]["data_type"], config["input"][0]["dims"]) == ("TYPE_STRING", [-1])
    assert (config["output"][0]["data_type"], config["output"][0]["dims"]) == (
        "TYPE_STRING",
        [-1],
    )
    assert config["version_policy"] == {"latest": {"num_versions": 1}}


def test_image_client_parse_model_accepts_the_classifier(server: FerryProcess) -> None:
    """What Triton's image_client.py checks before it sends anything."""
    client = grpc(server)
    metadata = client.get_model_metadata("classifier")
    config = client.get_model_config("classifier").config

    assert len(metadata.inputs) == 1 and len(metadata.outputs) == 1 and len(config.input) == 1
    assert metadata.outputs[0].datatype == "FP32"
    batch_dim = config.max_batch_size > 0
    assert len(metadata.inputs[0].shape) == 3 + (1 if batch_dim else 0)
    assert config.input[0].format in (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC)
    assert list(metadata.inputs[0].shape) == list(IMAGE)


def test_unsupported_fields_get_one_warning_each(server: FerryProcess) -> None:
    log = server.log()
    assert "'response_cache' is not supported by ferry and is ignored" in log
    assert "'model_warmup' samples are not used" in log
    # Read once per file content, not on every poll.
    assert log.count("'response_cache' is not supported") == 1


# -- applied ----------------------------------------------------------------------------


def test_version_policy_all_serves_both_versions(server: FerryProcess) -> None:
    client = http(server)
    assert client.is_model_ready("simple", "1")
    assert client.is_model_ready("simple", "2")


@pytest.mark.parametrize("dtype", ["INT32", "INT8"])
def test_simple_over_http_and_grpc(server: FerryProcess, dtype: str) -> None:
    model = "simple" if dtype == "INT32" else "simple_int8"
    a = np.arange(16, dtype=dtype.lower()).reshape(1, 16)
    b = np.ones((1, 16), dtype=dtype.lower())
    for module, client in ((httpclient, http(server)), (grpcclient, grpc(server))):
        inputs = [
            module.InferInput("INPUT0", [1, 16], dtype),
            module.InferInput("INPUT1", [1, 16], dtype),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer(model, inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_simple_string(server: FerryProcess) -> None:
    a = np.array([[str(i) for i in range(16)]], dtype=object)
    b = np.array([["1"] * 16], dtype=object)
    inputs = [grpcclient.InferInput(n, [1, 16], "BYTES") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)

    result = grpc(server).infer("simple_string", inputs)

    sums = [int(v) for v in result.as_numpy("OUTPUT0").reshape(-1)]
    assert sums == [i + 1 for i in range(16)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reshape_serves_the_declared_dims(server: FerryProcess, protocol: str) -> None:
    module = httpclient if protocol == "http" else grpcclient
    client = http(server) if protocol == "http" else grpc(server)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    data = module.InferInput("x", [2, 16], "FP32")
    data.set_data_from_numpy(x)

    result = client.infer("reshaped", [data])

    np.testing.assert_array_equal(result.as_numpy("y"), 2 * x)
    metadata = http(server).get_model_metadata("reshaped")
    assert metadata["inputs"][0]["shape"] == [-1, 16]
    assert http(server).get_model_config("reshaped")["input"][0]["reshape"] == {"shape": [4, 4]}


# -- the classification extension -------------------------------------------------------


def _image() -> np.ndarray:
    return np.random.default_rng(3).random(IMAGE, dtype=np.float32)


def _expected_classes(scores: np.ndarray, count: int, labels: list[str]) -> list[bytes]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:count]
    return [f"{scores[i]:.6f}:{i}:{labels[i]}".encode() for i in order]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_class_count_returns_score_index_label(server: FerryProcess, protocol: str) -> None:
    module = httpclient if protocol == "http" else grpcclient
    client = http(server) if protocol == "http" else grpc(server)
    image = _image()
    data = module.InferInput("data_0", list(IMAGE), "FP32")
    data.set_data_from_numpy(image)
    raw = client.infer("classifier", [data]).as_numpy("fc6_1")

    result = client.infer(
        "classifier", [data], outputs=[module.InferRequestedOutput("fc6_1", class_count=3)]
    )

    classes = result.as_numpy("fc6_1")
    assert classes.shape == (3,)  # max_batch_size 0: one row
    assert list(classes) == _expected_classes(raw, 3, LABELS)


def test_aio_clients_read_the_config_and_classes(server: FerryProcess) -> None:
    async def run() -> tuple[list, list, int, int]:
        h = httpclient_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        g = grpcclient_aio.InferenceServerClient(url=server.grpc_target)
        try:
            results = []
            for module, client in ((httpclient_aio, h), (grpcclient_aio, g)):
                data = module.InferInput("data_0", list(IMAGE), "FP32")
                data.set_data_from_numpy(_image())
                wanted = [module.InferRequestedOutput("fc6_1", class_count=2)]
                result = await client.infer("classifier", [data], outputs=wanted)
                results.append(list(result.as_numpy("fc6_1")))
            http_config = await h.get_model_config("classifier")
            grpc_config = (await g.get_model_config("classifier")).config
            return (
                results[0],
                results[1],
                http_config["max_batch_size"],
                grpc_config.input[0].format,
            )
        finally:
            await h.close()
            await g.close()

    over_http, over_grpc, max_batch_size, input_format = asyncio.run(run())

    assert over_http == over_grpc and len(over_http) == 2
    assert all(item.decode().split(":")[2] in LABELS for item in over_http)
    assert (max_batch_size, input_format) == (0, mc.ModelInput.FORMAT_NCHW)


def test_class_count_per_batch_row_without_labels(server: FerryProcess) -> None:
    a = np.array([np.arange(16), np.arange(16)[::-1]], dtype=np.int32)
    b = np.zeros((2, 16), dtype=np.int32)
    inputs = [httpclient.InferInput(n, [2, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)

    result = http(server).infer(
        "simple", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    )

    classes = result.as_numpy("OUTPUT0")
    assert classes.shape == (2, 2)
    # Integer scores print as integers (C++'s std::to_string), no label file: score:index.
    assert classes.tolist() == [[b"15:15", b"14:14"], [b"15:0", b"14:1"]]


def test_class_count_on_bytes_is_refused_in_tritons_words(server: FerryProcess) -> None:
    data = grpcclient.InferInput("INPUT0", [1, 2], "BYTES")
    data.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=object))
    with pytest.raises(InferenceServerException) as error:
        grpc(server).infer(
            "simple_identity",
            [data],
            outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=1)],
        )
    assert "class result not available for output due to unsupported type 'BYTES'" in str(
        error.value
    )


# -- configs that contradict the model --------------------------------------------------


BROKEN = {
    "wrong_name": 'name: "other" platform: "onnxruntime_onnx"',
    "missing_input": (
        'platform: "onnxruntime_onnx" max_batch_size: 8 '
        'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [16] }, '
        '{ name: "NOPE" data_type: TYPE_INT32 dims: [16] } ]'
    ),
    "wrong_dtype": (
        'platform: "onnxruntime_onnx" max_batch_size: 8 '
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [16] }, '
        '{ name: "INPUT1" data_type: TYPE_INT32 dims: [16] } ]'
    ),
    "wrong_dims": (
        'platform: "onnxruntime_onnx" max_batch_size: 8 '
        'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [16, 1] }, '
        '{ name: "INPUT1" data_type: TYPE_INT32 dims: [16] } ]'
    ),
    "tensorrt": 'platform: "tensorrt_plan"',
    "typo": 'platform: "onnxruntime_onnx" max_batch_sise: 8',
}
REASONS = {
    "wrong_name": (
        "unexpected directory name 'wrong_name' for model 'other', directory name must "
        "equal model name"
    ),
    "missing_input": "unexpected inference input 'NOPE', allowed inputs are: INPUT0, INPUT1",
    "wrong_dtype": (
        "unable to load model 'wrong_dtype', configuration expects datatype TYPE_FP32 for "
        "input 'INPUT0', model provides TYPE_INT32"
    ),
    "wrong_dims": (
        "model 'wrong_dims', tensor 'INPUT0': the model expects 2 dimensions (shape "
        "[-1,16]) but the model configuration specifies 3 dimensions"
    ),
    "tensorrt": "ferry has no runtime for Triton's platform 'tensorrt_plan'",
    "typo": 'has no field named "max_batch_sise"',
}


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    from support.models import write_model
    from support.triton_repository import simple_model

    root = tmp_path_factory.mktemp("broken_repository")
    for name, config in BROKEN.items():
        write_model(simple_model(), root / name, 1)
        (root / name / "config.pbtxt").write_text(config)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root)], log).wait_ready()
    yield server
    server.stop()


@pytest.mark.parametrize("model", sorted(BROKEN))
def test_contradicting_config_fails_the_load_saying_why(
    broken_server: FerryProcess, model: str
) -> None:
    index = http(broken_server).get_model_repository_index()
    entry = next(e for e in index if e["name"] == model)

    assert entry["state"] == "UNAVAILABLE"
    assert REASONS[model] in entry["reason"]


# -- config overrides on load -----------------------------------------------------------


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("control_repository")
    write_triton_repository(root)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), "--enable_model_control"], log).wait_ready()
    server.wait_version("simple", 2)
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_config_applies_it(control_server: FerryProcess, protocol: str) -> None:
    """Triton's lifecycle test: a config override's version policy takes effect."""
    client = http(control_server) if protocol == "http" else grpc(control_server)
    keep = 1 if protocol == "http" else 2
    override = {"backend": "onnxruntime", "version_policy": {"specific": {"versions": [keep]}}}

    client.load_model("simple", config=json.dumps(override))

    ready = http(control_server).is_model_ready
    assert ready("simple", str(keep))
    wait_until(lambda: not ready("simple", str(3 - keep)), timeout=10)
    config = http(control_server).get_model_config("simple")
    assert config["version_policy"] == {"specific": {"versions": [keep]}}
    assert config["max_batch_size"] == 0  # the override replaces config.pbtxt

    # A load without config keeps the override, as in Triton.
    client.load_model("simple")
    assert ready("simple", str(keep))
    assert not ready("simple", str(3 - keep))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_invalid_json_is_refused(control_server: FerryProcess, protocol: str) -> None:
    client = http(control_server) if protocol == "http" else grpc(control_server)
    with pytest.raises(InferenceServerException) as error:
        client.load_model("classifier", config="{not json")
    assert "failed to load 'classifier'" in str(error.value)
    assert http(control_server).is_model_ready("classifier")


def test_load_with_another_models_name_is_refused(control_server: FerryProcess) -> None:
    with pytest.raises(InferenceServerException) as error:
        grpc(control_server).load_model("classifier", config=json.dumps({"name": "simple"}))
    assert (
        "unexpected directory name 'classifier' for model 'simple', directory name must "
        "equal model name" in str(error.value)
    )


def test_load_with_contradicting_config_keeps_the_previous(control_server: FerryProcess) -> None:
    client = http(control_server)
    override = {
        "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP64", "dims": [16]}],
    }
    with pytest.raises(InferenceServerException) as error:
        client.load_model("simple_int8", config=json.dumps(override))
    assert "load failed for model 'simple_int8'" in str(error.value)
    assert client.is_model_ready("simple_int8", "1")
    assert client.get_model_config("simple_int8")["input"][0]["data_type"] == "TYPE_INT8"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_load_with_broken_files_keeps_the_model(
    control_server: FerryProcess, protocol: str
) -> None:
    """Uploaded files that do not load (tests/compat/test_triton_file_override.py has the
    ones that do): refused with Triton's words, and the repository's model serves on."""
    client = http(control_server) if protocol == "http" else grpc(control_server)
    with pytest.raises(InferenceServerException) as error:
        client.load_model(
            "classifier", config=json.dumps({}), files={"file:1/model.onnx": b"\x00" * 8}
        )
    assert "load failed for model 'classifier': version 1 is at UNAVAILABLE state" in str(
        error.value
    )
    assert http(control_server).is_model_ready("classifier")


def test_load_with_config_needs_model_control(server: FerryProcess) -> None:
    with pytest.raises(InferenceServerException) as error:
        http(server).load_model("simple", config=json.dumps({"max_batch_size": 0}))
    assert "explicit model load / unload is not allowed" in str(error.value)


def test_labels_come_only_from_the_model_folder(control_server: FerryProcess) -> None:
    override = {
        "output": [{"name": "fc6_1", "label_filename": "../../../../etc/hostname"}],
    }
    with pytest.raises(InferenceServerException) as error:
        http(control_server).load_model("classifier", config=json.dumps(override))
    assert "must be a file in the model folder" in str(error.value)
