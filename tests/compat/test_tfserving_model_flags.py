"""TF Serving's flags that decide what a version serves and how it is checked, honoured
as TF Serving honours them: `--saved_model_tags`, `--prefer_tflite_model`,
`--num_request_iterations_for_warmup` and `--enable_signature_method_name_check`.

One repository, real servers: one with TF Serving's defaults, one with the flags set
(`--saved_model_tags` on a server of its own, since it changes what every SavedModel
loads); each flag's effect is the difference between their answers.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.framework_models import settled_status, start_repository_server
from support.server import FerryProcess

pytestmark = pytest.mark.tensorflow
flag_models = pytest.importorskip("support.tfs_flag_models")
tf1_models = pytest.importorskip("support.tf1_models")
tfs_half_plus_two = pytest.importorskip("support.tfs_half_plus_two")

TAGS_FLAG = f"--saved_model_tags={flag_models.ALT_TAG},{flag_models.SERVE}"
FLAGS = (
    "--prefer_tflite_model=true",
    "--num_request_iterations_for_warmup=3",
    "--enable_signature_method_name_check=true",
)

# A Python model that counts its runs in a folder outside the repository, one file per
# server process, so the warm-up replays of each server can be counted.
COUNTING_MODEL = """
import os
from pathlib import Path


class Model:
    thread_safe = True
    signature = {
        "inputs": {"x": {"dtype": "float32", "shape": [-1, 1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1, 1]}},
    }

    def load(self, version_dir):
        self.runs = Path((version_dir / "runs_folder.txt").read_text()) / str(os.getpid())

    def predict(self, inputs):
        with self.runs.open("a") as runs:
            runs.write("run\\n")
        return {"y": inputs["x"]}
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flags") / "models"
    runs = tmp_path_factory.mktemp("runs")
    flag_models.save_two_meta_graphs(root / "tagged" / "1")
    flag_models.save_saved_model_and_tflite(
        root / "both" / "1", tmp_path_factory.mktemp("scratch") / "lite"
    )
    flag_models.save_custom_method(root / "custom_method" / "1")
    tf1_models.save_half_plus_two(root / "tf1" / "1")
    tfs_half_plus_two.save_half_plus_two_tf2(root / "tf2" / "1")
    counting = root / "counting" / "1"
    (counting / "assets.extra").mkdir(parents=True)
    (counting / "model.py").write_text(textwrap.dedent(COUNTING_MODEL))
    (counting / "runs_folder.txt").write_text(str(runs))
    (counting / "assets.extra" / "warmup_requests.jsonl").write_text(
        json.dumps({"instances": [[1.0]]}) + "\n" + json.dumps({"instances": [[2.0]]}) + "\n"
    )
    return {"root": root, "runs": runs}


MODELS = ("tagged", "both", "custom_method", "tf1", "tf2", "counting")


def _serve(repository: dict[str, Path], log: Path, *flags: str) -> FerryProcess:
    server = start_repository_server(
        repository["root"], log, "--allow_code", "counting", *flags, timeout=240
    )
    for model in MODELS:
        settled_status(server, model, timeout=120)
    return server


@pytest.fixture(scope="module")
def defaults(repository, tmp_path_factory) -> Iterator[FerryProcess]:
    server = _serve(repository, tmp_path_factory.mktemp("log") / "defaults.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flagged(repository, tmp_path_factory) -> Iterator[FerryProcess]:
    server = _serve(repository, tmp_path_factory.mktemp("log") / "flagged.log", *FLAGS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tagged(repository, tmp_path_factory) -> Iterator[FerryProcess]:
    server = _serve(repository, tmp_path_factory.mktemp("log") / "tagged.log", TAGS_FLAG)
    yield server
    server.stop()


def _predict(server: FerryProcess, model: str, body: dict) -> tuple[int, dict]:
    response = server.predict(model, body)
    return response.status_code, response.json()


def test_saved_model_tags_pick_the_meta_graph(defaults, tagged) -> None:
    body = {"instances": [1.0, 2.0]}
    assert _predict(defaults, "tagged", body) == (200, {"predictions": [2.0, 3.0]})
    assert _predict(tagged, "tagged", body) == (200, {"predictions": [11.0, 12.0]})


def test_saved_model_tags_that_match_no_meta_graph_fail_the_load(defaults, tagged) -> None:
    """`alt,serve` is a tag set only `tagged` has: the other SavedModels fail to load with
    a message naming the tags, as TF Serving's loader does; Python models still serve."""
    status = settled_status(tagged, "tf1")

    assert status["state"] == "END"
    assert (
        "MetaGraphDef associated with tags 'alt,serve' could not be found"
        in (status["status"]["error_message"])
    )
    assert settled_status(defaults, "tf1")["state"] == "AVAILABLE"
    assert _predict(tagged, "counting", {"instances": [[4.0]]}) == (200, {"predictions": [[4.0]]})


def test_prefer_tflite_model_serves_the_tflite_file(defaults, flagged) -> None:
    body = {"instances": [[1.0], [2.0]]}
    assert _predict(defaults, "both", body) == (200, {"predictions": [[2.0], [4.0]]})
    assert _predict(flagged, "both", body) == (200, {"predictions": [[3.0], [6.0]]})


def test_each_recorded_warmup_request_runs_the_given_number_of_times(
    defaults, flagged, repository
) -> None:
    def runs(server: FerryProcess) -> int:
        return len((repository["runs"] / str(server.pid)).read_text().splitlines())

    assert runs(defaults) == 2  # two records, once each
    assert runs(flagged) == 6  # two records, three times each


def _classify(server: FerryProcess, model: str, signature: str) -> tuple[int, dict]:
    body = {"signature_name": signature, "examples": [{"x": 1.0}]}
    response = server.post(f"/v1/models/{model}:classify", json=body)
    return response.status_code, response.json()


def test_method_name_check_refuses_a_predict_signature_for_classify(defaults, flagged) -> None:
    # TF2 exports say tensorflow/serving/predict on every signature.
    assert _classify(defaults, "tf2", "classify_x_to_y") == (
        200,
        {"results": [[["", 2.5]]]},
    )
    assert _classify(flagged, "tf2", "classify_x_to_y") == (
        400,
        {
            "error": "Expected classification signature method_name to be "
            "tensorflow/serving/classify. Was: tensorflow/serving/predict"
        },
    )


def test_method_name_check_needs_predict_classify_or_regress_for_predict(defaults, flagged) -> None:
    body = {"instances": [1.0]}
    assert _predict(defaults, "custom_method", body) == (200, {"predictions": [2.0]})
    assert _predict(flagged, "custom_method", body) == (
        500,
        {
            "error": "Expected prediction signature method_name to be one of "
            "{tensorflow/serving/predict, tensorflow/serving/classify, "
            "tensorflow/serving/regress}. Was: custom/method"
        },
    )


def test_method_name_check_over_grpc_with_tf_servings_stubs(defaults, flagged) -> None:
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf2"
    request.model_spec.signature_name = "classify_x_to_y"  # its method name: predict
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)

    with grpc.insecure_channel(defaults.grpc_target) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(
            request, timeout=30
        )
    assert answer.result.classifications[0].classes[0].score == 2.5
    with (
        grpc.insecure_channel(flagged.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
