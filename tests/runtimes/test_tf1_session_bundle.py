"""TF1-era SavedModels served as TF Serving serves them: a session bundle that runs
signatures by tensor name and lets the graph decide which shapes it takes.

The models are TF Serving's `saved_model_half_plus_two` / `saved_model_half_plus_three`
and the SageMaker recipe, rebuilt by tests/support/tf1_models.py; the expected answers
are those of TF Serving's test file, REST document, README demo and
`half_plus_two_model_metadata.json`. A TF2 export of the same function beside them
checks that `tf.saved_model.load` still serves TF2 exports, with their strict shapes.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import numpy as np
import pytest
from support.framework_models import start_repository_server, version_status
from support.server import FerryProcess

pytestmark = pytest.mark.tensorflow
tf1_models = pytest.importorskip("support.tf1_models")

from ferry.runtimes.tensorflow import (  # noqa: E402
    has_object_graph,
    read_saved_model,
    serve_meta_graph,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tf1") / "models"
    tf1_models.save_half_plus_two(root / "default" / "123")
    tf1_models.save_half_plus_three(root / "half_plus_three" / "123")
    tf1_models.save_sagemaker_recipe(root / "sagemaker" / "1")
    tf1_models.save_half_plus_two_tf2(root / "tf2" / "1")
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = start_repository_server(root, log_path, timeout=240)
    yield process
    process.stop()


def predict(server: FerryProcess, model: str, body: dict) -> tuple[int, dict]:
    response = server.predict(model, body)
    return response.status_code, response.json()


def test_the_loader_is_chosen_by_the_object_graph(root, server: FerryProcess) -> None:
    for model in ("default", "half_plus_three", "sagemaker", "tf2"):
        assert version_status(server, model)["state"] == "AVAILABLE", model
    assert not has_object_graph(serve_meta_graph(read_saved_model(root / "default" / "123")))
    assert not has_object_graph(serve_meta_graph(read_saved_model(root / "sagemaker" / "1")))
    assert has_object_graph(serve_meta_graph(read_saved_model(root / "tf2" / "1")))


def test_readme_demo_and_rest_doc_answers(server: FerryProcess) -> None:
    # TF Serving's README, "Serve a Tensorflow model in 60 seconds".
    assert predict(server, "default", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    # tensorflow_model_server_test.py: testPredictREST, testPredictColumnarREST.
    assert predict(server, "default", {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )
    assert predict(server, "default", {"inputs": [2.0, 3.0, 4.0]}) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )
    # A rank the signature (x: [-1, 1]) does not declare: the graph takes it.
    assert predict(server, "default", {"instances": [[1, 2], [3, 4]]}) == (
        200,
        {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
    )
    # TF Serving's REST API document, half_plus_three (x has no recorded shape).
    assert predict(server, "half_plus_three", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [3.5, 4.0, 5.5]},
    )


def test_sagemaker_recipe_serves_and_tf_refuses_what_the_graph_cannot_take(
    server: FerryProcess,
) -> None:
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], dtype=np.float32)
    status, body = predict(server, "sagemaker", {"instances": x.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"], tf1_models.sagemaker_scores(x), rtol=1e-6)
    # Two columns for a [?, 3] MatMul: TensorFlow's own INVALID_ARGUMENT, as a 400.
    status, body = predict(server, "sagemaker", {"instances": [[1.0, 2.0]]})
    assert status == 400
    assert body["error"].startswith("Matrix size-incompatible: In[0]: [1,2], In[1]: [3,1]")
    assert "[[" not in body["error"]  # no graph-node trailer
    # Names and dtypes are still checked before TensorFlow runs (the messages are the
    # protocol's error table's; tested with it).
    for bad in ({"inputs": {"nope": [[1.0, 2.0, 3.0]]}}, {"instances": [["a", "b", "c"]]}):
        status, body = predict(server, "sagemaker", bad)
        assert status == 400 and list(body) == ["error"], body
        assert "Matrix" not in body["error"]


def test_tf2_exports_keep_their_concrete_function_shapes(server: FerryProcess) -> None:
    assert predict(server, "tf2", {"instances": [[2.0], [3.0]]}) == (
        200,
        {"predictions": [[3.0], [3.5]]},
    )
    status, body = predict(server, "tf2", {"instances": [2.0, 3.0]})
    assert status == 400
    assert "shape" in body["error"]


def test_requests_of_different_ranks_are_answered_each_as_sent(server: FerryProcess) -> None:
    """The batcher stacks only requests of one trailing shape; each gets its own rows."""
    shapes = [(2,), (3, 1), (1, 2)]  # rank 1, the declared [-1, 1], a wider row
    bodies = [{"instances": np.full(shapes[i % 3], float(i)).tolist()} for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: predict(server, "default", b), bodies))
    for body, (status, answer) in zip(bodies, answers, strict=True):
        assert status == 200, answer
        expected = (np.array(body["instances"]) * 0.5 + 2.0).tolist()
        assert answer == {"predictions": expected}


def _info(name: str, dtype: str, dims: list[int] | None) -> dict:
    shape = (
        {"dim": [], "unknown_rank": True}
        if dims is None
        else {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(inputs: dict, outputs: dict, method: str) -> dict:
    return {
        "inputs": inputs,
        "outputs": outputs,
        "method_name": f"tensorflow/serving/{method}",
        "defaults": {},
    }


# TF Serving's testdata/half_plus_two_model_metadata.json, field by field.
_COLUMN = [-1, 1]
EXPECTED_METADATA = {
    "model_spec": {"name": "default", "signature_name": "", "version": "123"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "regress_x2_to_y3": _signature(
                    {"inputs": _info("x2:0", "DT_FLOAT", _COLUMN)},
                    {"outputs": _info("y3:0", "DT_FLOAT", _COLUMN)},
                    "regress",
                ),
                "serving_default": _signature(
                    {"x": _info("x:0", "DT_FLOAT", _COLUMN)},
                    {"y": _info("y:0", "DT_FLOAT", _COLUMN)},
                    "predict",
                ),
                "classify_x_to_y": _signature(
                    {"inputs": _info("tf_example:0", "DT_STRING", None)},
                    {"scores": _info("y:0", "DT_FLOAT", _COLUMN)},
                    "classify",
                ),
                "regress_x_to_y2": _signature(
                    {"inputs": _info("tf_example:0", "DT_STRING", None)},
                    {"outputs": _info("y2:0", "DT_FLOAT", _COLUMN)},
                    "regress",
                ),
                "regress_x_to_y": _signature(
                    {"inputs": _info("tf_example:0", "DT_STRING", None)},
                    {"outputs": _info("y:0", "DT_FLOAT", _COLUMN)},
                    "regress",
                ),
            }
        }
    },
}


def test_rest_metadata_is_tf_servings_half_plus_two_metadata(server: FerryProcess) -> None:
    response = server.get("/v1/models/default/metadata")
    assert response.status_code == 200
    assert response.json() == EXPECTED_METADATA


def test_tf2_metadata_names_the_graph_tensors(server: FerryProcess) -> None:
    signature = server.get("/v1/models/tf2/metadata").json()["metadata"]["signature_def"]
    serving = signature["signature_def"]["serving_default"]
    assert serving["inputs"]["x"]["name"] == "serving_default_x:0"
    assert serving["outputs"]["y"]["name"].startswith("StatefulPartitionedCall")
