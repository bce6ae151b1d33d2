"""Consent to run a model's code or unpickle its files is the operator's (issue 11, Build 1).

Every format that can run code at load gets a payload that writes a marker file: a
`model.py`, SageMaker's `code/inference.py`, a joblib pickle, a `.pt2` archive with a
pickled legacy weights entry, and Keras Lambda layers in `.keras` and `.h5` files. Against
a real `ferry serve`:

* without the operator's flag the version fails to load, FAILED_PRECONDITION, with a
  message naming the flag; nothing ran; the other models keep serving;
* a `ferry.toml` saying `allow_code = true` / `allow_pickle = true`, a flag naming another
  model, or FERRY_ALLOW_* outside SageMaker mode change nothing;
* with the flag the model loads and answers (the payload ran: that is what was allowed);
* a model configured by a ReloadConfigRequest runs nothing, even under `--allow_code '*'`.
"""

from __future__ import annotations

import io
import textwrap
import zipfile
from pathlib import Path

import grpc
import joblib
import pytest
from support.framework_models import settled_status, start_repository_server
from support.models import scale_model, write_model
from support.security import GoodClient, marker_file
from support.server import FerryProcess

from ferry.consent import ExecutionConsent
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.protos import message_class
from ferry.repository.source import LocalVersionSource

ROW = [[1.0, 2.0, 3.0, 4.0]]


# -- payloads ------------------------------------------------------------------------------


def writes_marker(marker: Path) -> str:
    """A Python expression that writes `marker` (the attack "ran")."""
    return f"open({str(marker)!r}, 'w').write('ran')"


class _Eval:
    """Pickles as `eval(source)`: unpickling runs `source`, as any pickle may."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple:
        return (eval, (self.source,))


def write_model_py(folder: Path, marker: Path) -> Path:
    """A `model.py` that writes the marker when imported and then serves y = 2x."""
    version = folder / "1"
    version.mkdir(parents=True)
    source = f"""
    {writes_marker(marker)}


    class Model:
        signature = {{
            "inputs": {{"x": {{"dtype": "float32", "shape": [-1, 4]}}}},
            "outputs": {{"y": {{"dtype": "float32", "shape": [-1, 4]}}}},
        }}

        def load(self, version_dir):
            pass

        def predict(self, inputs):
            return {{"y": inputs["x"] * 2}}
    """
    (version / "model.py").write_text(textwrap.dedent(source))
    return version


def write_pickle(folder: Path, marker: Path) -> Path:
    """A `model.joblib` whose unpickling writes the marker and gives a working estimator
    (a constant regressor answering 7)."""
    version = folder / "1"
    version.mkdir(parents=True)
    estimator = (
        "__import__('sklearn.dummy', fromlist=['DummyRegressor'])"
        ".DummyRegressor(strategy='constant', constant=7.0).fit([[0.0] * 4], [7.0])"
    )
    joblib.dump(_Eval(f"({writes_marker(marker)}, {estimator})[1]"), version / "model.joblib")
    return version


def folder_consent(folder: Path, key: str) -> None:
    """What used to be consent: the model folder's own ferry.toml."""
    (folder / "ferry.toml").write_text(f"{key} = true\n")


# -- checks --------------------------------------------------------------------------------


def assert_refused(server: FerryProcess, model: str, flag: str, marker: Path) -> str:
    """The version failed to load with the refusal naming `flag`, requests for the model
    get TF Serving's not-found answer, and the payload never ran. Returns the message."""
    status = settled_status(server, model)
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "FAILED_PRECONDITION"
    message = status["status"]["error_message"]
    assert f"ferry serve {flag} {model}" in message
    response = server.predict(model, {"instances": ROW})
    assert response.status_code == 404
    assert response.json() == {"error": f"Servable not found for request: Latest({model})"}
    assert not marker.exists(), f"the {model} payload ran"
    return message


def assert_serves(server: FerryProcess, model: str) -> list:
    """The model loaded and answers a row; returns its predictions."""
    assert settled_status(server, model)["state"] == "AVAILABLE"
    response = server.predict(model, {"instances": ROW})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def good_client(server: FerryProcess) -> GoodClient:
    return GoodClient(f"{server.url}/v1/models/good:predict", {"instances": ROW})


# -- the operator's consent, as an object --------------------------------------------------


def test_consent_names_models_exactly_and_never_a_network_configured_one() -> None:
    consent = ExecutionConsent.from_flags(code=["a,b", "c"], pickle=["*"])
    assert consent.allows_code("a") and consent.allows_code("c")
    assert not consent.allows_code("ab") and not consent.allows_code("d")
    assert consent.allows_pickle("anything")
    assert consent.for_model("a", trusted=True).code
    reloaded = consent.for_model("a", trusted=False)
    assert not reloaded.code and not reloaded.pickle
    with pytest.raises(ValueError, match="exact"):
        ExecutionConsent.from_flags(code=["m*"])


# -- model.py and pickles: one server without consent, one with ----------------------------


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A server whose operator allowed nothing for these models: a flag names another
    model, the folders say `allow_* = true`, and FERRY_ALLOW_* (SageMaker mode only) are
    set."""
    base = tmp_path_factory.mktemp("refusing")
    root = base / "models"
    write_model(scale_model(2.0), root / "good", 1)
    markers = {name: marker_file(base / name) for name in ("code", "code_toml", "pickled")}
    for marker in markers.values():
        marker.parent.mkdir()
    write_model_py(root / "code", markers["code"])
    write_model_py(root / "code_toml", markers["code_toml"])
    folder_consent(root / "code_toml", "allow_code")
    write_pickle(root / "pickled", markers["pickled"])
    folder_consent(root / "pickled", "allow_pickle")
    server = FerryProcess(
        [str(root), "--file_system_poll_wait_seconds", "0", "--allow_code", "good"],
        base / "ferry.log",
        env={"FERRY_ALLOW_CODE": "*", "FERRY_ALLOW_PICKLE": "*"},
    )
    try:
        server.wait_ready(timeout=60)
        yield {"server": server, "markers": markers}
    finally:
        server.stop()


def test_model_py_without_the_flag_runs_nothing(refusing: dict) -> None:
    server, markers = refusing["server"], refusing["markers"]
    message = assert_refused(server, "code", "--allow_code", markers["code"])
    assert "model.py is Python code" in message
    assert_serves(server, "good")


def test_folder_consent_for_code_grants_nothing(refusing: dict) -> None:
    server, markers = refusing["server"], refusing["markers"]
    assert_refused(server, "code_toml", "--allow_code", markers["code_toml"])
    assert "`allow_code = true` no longer allows anything" in server.log()


def test_pickle_without_the_flag_runs_nothing(refusing: dict) -> None:
    server, markers = refusing["server"], refusing["markers"]
    message = assert_refused(server, "pickled", "--allow_pickle", markers["pickled"])
    assert "model.joblib is a pickle" in message and "ferry save" in message
    assert "`allow_pickle = true` no longer allows anything" in server.log()
    assert_serves(server, "good")


@pytest.fixture(scope="module")
def allowing(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("allowing")
    root = base / "models"
    markers = {name: marker_file(base / name) for name in ("code", "pickled")}
    for marker in markers.values():
        marker.parent.mkdir()
    write_model_py(root / "code", markers["code"])
    write_pickle(root / "pickled", markers["pickled"])
    server = start_repository_server(
        root, base / "ferry.log", "--allow_code", "*", "--allow_pickle", "other,pickled"
    )
    yield {"server": server, "markers": markers}
    server.stop()


def test_the_operator_flag_lets_model_py_and_pickles_load(allowing: dict) -> None:
    server, markers = allowing["server"], allowing["markers"]
    assert assert_serves(server, "code") == [[2.0, 4.0, 6.0, 8.0]]
    assert assert_serves(server, "pickled") == [7.0]
    assert markers["code"].exists() and markers["pickled"].exists()


# -- a reload request never gets consent --------------------------------------------------


def reload_request(models: dict[str, Path]) -> object:
    request = message_class("tensorflow.serving.ReloadConfigRequest")()
    for name, base_path in models.items():
        config = request.config.model_config_list.config.add()
        config.name = name
        config.base_path = str(base_path)
    return request


def test_a_reload_request_runs_no_code_even_with_allow_code_star(
    tmp_path: Path, start_server
) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "good", 1)
    uploads = tmp_path / "uploads"  # a folder the client chose, inside the allowed roots
    markers = {name: marker_file(tmp_path / name) for name in ("code", "pickled")}
    for marker in markers.values():
        marker.parent.mkdir()
    write_model_py(uploads / "code", markers["code"])
    folder_consent(uploads / "code", "allow_code")
    write_pickle(uploads / "pickled", markers["pickled"])
    server = start_server(
        str(root),
        "--allow_code",
        "*",
        "--allow_pickle",
        "*",
        "--enable_model_control",
        "--model_roots",
        str(tmp_path),
    )
    request = reload_request(
        {"good": root / "good", "code": uploads / "code", "pickled": uploads / "pickled"}
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        reload = channel.unary_unary(
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class(
                "tensorflow.serving.ReloadConfigResponse"
            ).FromString,
        )
        with good_client(server) as client:
            response = reload(request, timeout=60)
    assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "configured by a network request" in response.status.error_message
    for name, flag in (("code", "--allow_code"), ("pickled", "--allow_pickle")):
        message = assert_refused(server, name, flag, markers[name])
        assert "configured by a network request (ReloadConfigRequest)" in message
    # The reload replaced the whole catalog; the model it kept never stopped serving.
    client.assert_served(min_requests=1)
    assert_serves(server, "good")


def test_the_manager_grants_an_untrusted_spec_nothing(tmp_path: Path) -> None:
    """The mechanism under the reload test: whatever the operator allowed, a spec marked
    untrusted (parsed from a ReloadConfigRequest) loads no code and no pickle."""
    markers = {name: marker_file(tmp_path / name) for name in ("code", "pickled")}
    for marker in markers.values():
        marker.parent.mkdir()
    write_model_py(tmp_path / "models" / "code", markers["code"])
    write_pickle(tmp_path / "models" / "pickled", markers["pickled"])
    consent = ExecutionConsent.from_flags(code=["*"], pickle=["*"])
    manager = ModelManager(ManagerOptions(consent=consent), Metrics())
    try:
        for name in markers:
            base = tmp_path / "models" / name
            spec = ModelSpec(name, base, trusted=False)
            manager.sync(spec, LocalVersionSource(base).list_versions())
            [record] = manager.version_status(name)
            assert record.state.name == "END"
            assert record.error_code.name == "FAILED_PRECONDITION"
            assert "configured by a network request" in record.error_message
            assert not markers[name].exists()
    finally:
        manager.shutdown()


# -- SageMaker's code/inference.py ---------------------------------------------------------

INFERENCE_PY = """
{payload}


def input_handler(data, context):
    return data.read()
"""


def sagemaker_folder(tmp_path: Path, marker: Path) -> Path:
    model_dir = tmp_path / "opt-ml-model"
    write_model(scale_model(2.0), model_dir, 1)
    (model_dir / "code").mkdir()
    source = INFERENCE_PY.format(payload=writes_marker(marker))
    (model_dir / "code" / "inference.py").write_text(source)
    folder_consent(model_dir, "allow_code")
    return model_dir


@pytest.mark.parametrize(
    "env",
    [{}, {"FERRY_ALLOW_CODE": "model"}],
    ids=["no consent", "one model's consent"],
)
def test_sagemaker_inference_py_needs_the_operators_consent_for_every_model(
    tmp_path: Path, start_server, env: dict[str, str]
) -> None:
    marker = marker_file(tmp_path)
    model_dir = sagemaker_folder(tmp_path, marker)
    server = start_server(
        "--sagemaker", "--sagemaker_model_dir", str(model_dir), env=env, ready=False
    )
    assert server.process.wait(60) != 0
    log = server.log()
    assert "inference.py is Python code" in log
    assert "FERRY_ALLOW_CODE='*'" in log
    assert not marker.exists()


def test_sagemaker_env_consent_lets_inference_py_run(tmp_path: Path, start_server) -> None:
    marker = marker_file(tmp_path)
    model_dir = sagemaker_folder(tmp_path, marker)
    server = start_server(
        "--sagemaker", "--sagemaker_model_dir", str(model_dir), env={"FERRY_ALLOW_CODE": "*"}
    )
    response = server.post(
        "/invocations", data=b'{"instances": [[1, 2, 3, 4]]}', headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert marker.exists()


# -- PyTorch: a .pt2 archive with a pickled legacy weights entry ---------------------------


def write_pt2_with_pickled_weights(folder: Path, marker: Path) -> Path:
    """A torch.export archive of y = Linear(x) whose legacy weights entry
    (`data/weights/model.pt`) is a pickle that writes the marker and returns the weights
    (all ones, bias zero: y = sum(x) per output)."""
    import torch

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l(x)

    program = torch.export.export(
        Linear(), (torch.zeros(2, 4),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    clean = io.BytesIO()
    torch.export.save(program, clean)
    nn = "__import__('torch').nn"
    weights = (
        f"{{'l.weight': {nn}.Parameter(__import__('torch').ones(2, 4)), "
        f"'l.bias': {nn}.Parameter(__import__('torch').zeros(2))}}"
    )
    payload = io.BytesIO()
    torch.save(_Eval(f"({writes_marker(marker)}, {weights})[1]"), payload)
    version = folder / "1"
    version.mkdir(parents=True)
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(version / "model.pt2", "w") as out:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            out.writestr(info, source.read(info.filename))
        out.writestr(f"{root}/data/weights/model.pt", payload.getvalue())
    return version


@pytest.mark.torch
def test_pt2_with_a_pickled_entry_needs_allow_pickle(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "good", 1)
    markers = {name: marker_file(tmp_path / name) for name in ("pt2", "pt2_allowed")}
    for name, marker in markers.items():
        marker.parent.mkdir()
        write_pt2_with_pickled_weights(root / name, marker)
    folder_consent(root / "pt2", "allow_pickle")
    server = start_repository_server(
        root, tmp_path / "ferry.log", "--allow_pickle", "pt2_allowed", "--allow_code", "pt2"
    )
    try:
        message = assert_refused(server, "pt2", "--allow_pickle", markers["pt2"])
        assert "data/weights/model.pt" in message
        assert_serves(server, "good")
        assert assert_serves(server, "pt2_allowed") == [[10.0, 10.0]]
        assert markers["pt2_allowed"].exists()
    finally:
        server.stop()


# -- Keras: Lambda layers in .keras and .h5 files ------------------------------------------


def write_lambda_model(folder: Path, marker: Path, file_name: str) -> Path:
    """A Keras model y = 2x whose Lambda layer writes the marker when called (and Keras
    calls it when it rebuilds the model at load)."""
    import keras

    function = eval(f"lambda t: ({writes_marker(marker)}, t * 2)[1]")  # a real lambda
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(function, name="payload")(inputs))
    version = folder / "1"
    version.mkdir(parents=True)
    model.save(version / file_name)
    marker.unlink(missing_ok=True)  # building the model called it here
    return version


@pytest.mark.tensorflow
def test_keras_lambda_layers_need_allow_code(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "good", 1)
    files = {"keras": "model.keras", "h5": "model.h5"}
    markers = {}
    for kind, file_name in files.items():
        for name in (kind, f"{kind}_allowed"):
            markers[name] = marker_file(tmp_path / name)
            markers[name].parent.mkdir()
            write_lambda_model(root / name, markers[name], file_name)
        folder_consent(root / kind, "allow_code")
    server = start_repository_server(
        root,
        tmp_path / "ferry.log",
        "--allow_code",
        "keras_allowed,h5_allowed",
        "--allow_pickle",
        "keras,h5",
    )
    try:
        for kind in files:
            message = assert_refused(server, kind, "--allow_code", markers[kind])
            assert "Lambda layers (payload)" in message
            assert assert_serves(server, f"{kind}_allowed") == [[2.0, 4.0, 6.0, 8.0]]
            assert markers[f"{kind}_allowed"].exists()
        assert_serves(server, "good")
    finally:
        server.stop()
