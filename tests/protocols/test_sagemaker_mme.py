"""SageMaker multi-model endpoints (SAGEMAKER_MULTI_MODEL=true), as the SageMaker
TensorFlow Serving container's own MME tests (test_multi_model_endpoint.py) check them:
the MME API's statuses and bodies, TargetModel through boto3's sagemaker-runtime client
with archives in (moto's) S3, and least-recently-used eviction that never unloads a
model a request is using."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.models import scale_model, write_model
from support.s3 import MotoS3
from support.server import FerryProcess

boto3 = pytest.importorskip("boto3")

BUCKET = "mme-models"
ROWS = {"instances": [[1.0, 2.0, 5.0, 0.0]]}


def build_models(root: Path) -> Path:
    """/opt/ml/models as the container's tests have it: two models, one with two
    versions, and a folder without a version."""
    models = root / "opt-ml-models"
    write_model(scale_model(2.0), models / "two", 1)
    write_model(scale_model(3.0), models / "three", 123)
    write_model(scale_model(3.0), models / "three", 124)
    (models / "invalid_version" / "abcde").mkdir(parents=True)
    (models / "invalid_version" / "abcde" / "dummy.txt").write_text("not a model")
    return models


def upload_archive(store: MotoS3, work: Path, key: str, factor: float) -> None:
    """A `ferry package` archive (NAME/VERSION/model.onnx) at s3://BUCKET/models/KEY."""
    from ferry.deploy.package import package

    folder = work / key.removesuffix(".tar.gz")
    write_model(scale_model(factor), folder, 1)
    packed = package(folder, work / "archives" / key)
    store.client.upload_file(str(packed.archive), BUCKET, f"models/{key}")


def start(args: list[str], logs: Path, env: dict[str, str]) -> FerryProcess:
    process = FerryProcess(
        ["--sagemaker", *args], logs / "ferry.log", env={"SAGEMAKER_MULTI_MODEL": "true", **env}
    )
    process.wait_ready()
    return process


@pytest.fixture(scope="module")
def store() -> Iterator[MotoS3]:
    s3 = MotoS3()
    s3.start()
    s3.client.create_bucket(Bucket=BUCKET)
    yield s3
    s3.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: MotoS3) -> Iterator[FerryProcess]:
    work = tmp_path_factory.mktemp("mme")
    for key, factor in (("m1.tar.gz", 10.0), ("team/m2.tar.gz", 20.0)):
        upload_archive(store, work, key, factor)
    process = start(
        [
            "--sagemaker_multi_model_dir",
            str(build_models(work)),
            "--sagemaker_model_data_url",
            f"s3://{BUCKET}/models/",
            "--model_cache_dir",
            str(work / "cache"),
        ],
        work,
        store.env,
    )
    yield process
    process.stop()


def load(server: FerryProcess, name: str, url: str) -> requests.Response:
    return server.post("/models", data=json.dumps({"model_name": name, "url": url}))


def invoke(server: FerryProcess, name: str, version: str | None = None) -> requests.Response:
    attributes = "tfs-method=predict" + (f",tfs-model-version={version}" if version else "")
    return server.post(
        f"/models/{name}/invoke",
        data=json.dumps(ROWS),
        headers={
            "Content-Type": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": attributes,
        },
    )


def models_dir(server: FerryProcess) -> Path:
    args = server.process.args
    return Path(args[args.index("--sagemaker_multi_model_dir") + 1])


# -- the MME API ---------------------------------------------------------------------------


def test_ping_answers_200_with_no_model_loaded(server: FerryProcess) -> None:
    assert server.get("/ping").status_code == 200


def test_invoking_a_model_not_loaded_is_404(server: FerryProcess) -> None:
    response = invoke(server, "half_plus_three")
    assert response.status_code == 404
    assert "Model half_plus_three is not loaded yet." in response.json()["error"]


def test_unloading_a_model_not_loaded_is_404(server: FerryProcess) -> None:
    response = server.session.delete(server.url + "/models/non-existing-model", timeout=10)
    assert response.status_code == 404
    assert "Model non-existing-model is not loaded yet" in response.text


def test_load_invoke_unload(server: FerryProcess) -> None:
    response = load(server, "two", str(models_dir(server) / "two"))
    assert response.status_code == 200, response.text
    assert "Successfully loaded model two" in response.json()["success"]
    answer = invoke(server, "two")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [[2.0, 4.0, 10.0, 0.0]]}
    listed = server.get("/models").json()
    assert listed["two"]["model_version_status"][0]["state"] == "AVAILABLE"
    assert server.get("/models/two").json()["model"]["model_version_status"][0]["version"] == "1"

    unloaded = server.session.delete(server.url + "/models/two", timeout=10)
    assert unloaded.status_code == 200
    assert unloaded.json() == {"success": "Successfully unloaded model two."}
    again = invoke(server, "two")
    assert again.status_code == 404
    assert "Model two is not loaded yet." in again.text
    assert server.get("/models/two").status_code == 404


def test_every_version_of_a_loaded_model_answers(server: FerryProcess) -> None:
    assert load(server, "three", str(models_dir(server) / "three")).status_code == 200
    for version in ("123", "124"):
        response = invoke(server, "three", version)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [[3.0, 6.0, 15.0, 0.0]]}
    again = load(server, "three", str(models_dir(server) / "three"))
    assert again.status_code == 409
    assert "Model three is already loaded" in again.json()["error"]


@pytest.mark.parametrize("folder", ["non-existing", "invalid_version"])
def test_a_folder_without_versions_is_404(server: FerryProcess, folder: str) -> None:
    url = str(models_dir(server) / folder)
    response = load(server, folder, url)
    assert response.status_code == 404
    assert f"Could not find valid base path {url} for servable {folder}" in response.text


def test_a_malformed_load_request_is_500_as_in_the_container(server: FerryProcess) -> None:
    response = server.post("/models", data=json.dumps({"model_name": "m", "uri": "/x"}))
    assert response.status_code == 500
    assert "'url'" in response.json()["error"]


def test_a_folder_outside_the_models_folder_is_refused(
    server: FerryProcess, tmp_path: Path
) -> None:
    write_model(scale_model(1.0), tmp_path / "elsewhere", 1)
    response = load(server, "elsewhere", str(tmp_path / "elsewhere"))
    assert response.status_code == 403
    assert "outside the folders" in response.json()["error"]


# -- TargetModel -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(server: FerryProcess):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-checked-without-auth",
    )


def test_target_model_loads_an_archive_from_s3_on_first_use(server, runtime) -> None:
    for target, factor in (("m1.tar.gz", 10.0), ("team/m2.tar.gz", 20.0)):
        for _ in range(2):  # the first loads, the second finds it loaded
            response = runtime.invoke_endpoint(
                EndpointName="mme",
                TargetModel=target,
                Body=json.dumps(ROWS).encode(),
                ContentType="application/json",
            )
            body = json.loads(response["Body"].read())
            assert body == {"predictions": [[factor, 2 * factor, 5 * factor, 0.0]]}
    listed = server.get("/models").json()
    assert "m1" in listed and any(name.startswith("team_m2-") for name in listed)


def test_target_model_on_invocations(server: FerryProcess) -> None:
    response = server.post(
        "/invocations",
        data=json.dumps(ROWS),
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "m1.tar.gz"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[10.0, 20.0, 50.0, 0.0]]}
    without = server.post("/invocations", data=json.dumps(ROWS))
    assert without.status_code == 400
    assert without.json() == {"error": "Invocation request does not contain model name."}


def test_a_missing_target_model_is_a_validation_error(runtime) -> None:
    with pytest.raises(runtime.exceptions.ValidationError, match=r"absent\.tar\.gz not found"):
        runtime.invoke_endpoint(
            EndpointName="mme",
            TargetModel="absent.tar.gz",
            Body=json.dumps(ROWS).encode(),
            ContentType="application/json",
        )


# -- eviction --------------------------------------------------------------------------------


def test_the_least_recently_used_idle_model_is_evicted_under_the_byte_budget(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    for name in ("a", "b", "c"):
        write_model(scale_model(1.0), models / name, 1)
    size = (models / "a" / "1" / "model.onnx").stat().st_size
    process = start(
        ["--sagemaker_multi_model_dir", str(models), "--max_loaded_models_bytes", str(2 * size)],
        tmp_path,
        {},
    )
    try:
        for name in ("a", "b"):
            assert load(process, name, str(models / name)).status_code == 200
        assert invoke(process, "a").status_code == 200  # a is now used more recently than b
        assert load(process, "c", str(models / "c")).status_code == 200
        assert sorted(process.get("/models").json()) == ["a", "c"]
        assert invoke(process, "b").status_code == 404
        assert "evicting b" in process.log()
    finally:
        process.stop()


def test_a_model_in_use_is_never_evicted(tmp_path: Path) -> None:
    """A request still sending its body holds its model: a load that needs the room
    gets 507 instead of evicting it, and the request then completes. On the Python front:
    the Rust front hands a request to Python once its body is read, so it holds its model
    from then on (docs/dataplane.md, differences)."""
    models = tmp_path / "models"
    write_model(scale_model(2.0), models / "busy", 1)
    write_model(scale_model(1.0), models / "quick", 1)
    flags = ["--sagemaker_multi_model_dir", str(models), "--max_loaded_models", "1"]
    process = start([*flags, "--dataplane", "python"], tmp_path, {})
    try:
        assert load(process, "busy", str(models / "busy")).status_code == 200
        body = json.dumps(ROWS).encode()
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as conn:
            conn.sendall(
                b"POST /models/busy/invoke HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            time.sleep(0.3)  # the server has the head: the request is in flight
            refused = load(process, "quick", str(models / "quick"))
            conn.sendall(body[5:])
            received = b""
            for _ in range(20):  # head and body may come in separate packets
                received += conn.recv(65536)
                if received.endswith(b"}"):
                    break
            answer = received.decode()
        assert refused.status_code == 507, refused.text
        assert "Memory exhausted" in refused.json()["error"]
        assert answer.startswith("HTTP/1.1 200"), answer
        assert '"predictions":[[2.0,4.0,10.0,0.0]]' in answer
        # Idle now: loading another model evicts it.
        assert load(process, "quick", str(models / "quick")).status_code == 200
        assert list(process.get("/models").json()) == ["quick"]
    finally:
        process.stop()


# -- inference.py and auth ---------------------------------------------------------------

MME_INFERENCE = """
import json


def input_handler(data, context):
    if context.request_content_type != "text/csv":
        raise ValueError(f"unsupported content type {context.request_content_type}")
    rows = [[float(v) for v in line.split(",")] for line in data.read().decode().splitlines()]
    return json.dumps({"instances": rows})


def output_handler(response, context):
    if response.status_code != 200:
        raise ValueError(response.content.decode())
    return response.content, "application/json"
"""


def test_inference_py_of_the_models_folder_wraps_every_model(tmp_path: Path) -> None:
    """The container's test_pre_post_processing_mme: one /opt/ml/models/code/inference.py
    around the models loaded through the MME API."""
    models = build_models(tmp_path)
    (models / "code").mkdir()
    (models / "code" / "inference.py").write_text(MME_INFERENCE)
    process = start(
        ["--sagemaker_multi_model_dir", str(models)], tmp_path, {"FERRY_ALLOW_CODE": "*"}
    )
    try:
        assert load(process, "three", str(models / "three")).status_code == 200
        for version in ("123", "124"):
            response = process.post(
                "/models/three/invoke",
                data="1,2,5,0",
                headers={
                    "Content-Type": "text/csv",
                    "X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-version={version}",
                },
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": [[3.0, 6.0, 15.0, 0.0]]}
        unsupported = process.post(
            "/models/three/invoke", data="aW1hZ2U=", headers={"Content-Type": "unsupported-type"}
        )
        assert unsupported.status_code == 500
        assert "unsupported content type" in unsupported.text
    finally:
        process.stop()


def test_loading_and_unloading_are_admin_apis() -> None:
    from ferry.model_control import is_admin_http

    assert is_admin_http("POST", "/models")
    assert is_admin_http("POST", "/Models/")
    assert is_admin_http("DELETE", "/models/m1")
    assert is_admin_http("DELETE", "/models%2Fm1")
    assert not is_admin_http("GET", "/models")
    assert not is_admin_http("POST", "/models/m1/invoke")
    assert not is_admin_http("DELETE", "/v1/models/m1")
