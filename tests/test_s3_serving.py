"""Serving s3:// models from a real S3-compatible server (moto) with `ferry serve`.

The same semantics as a local model folder: new versions appear within the poll
interval; a store that goes away leaves the loaded version serving, shows in the
status, and is retried until it is back.
"""

from __future__ import annotations

from pathlib import Path

from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture
from support.server import FerryProcess, wait_until

POLL_SECONDS = 0.3
FAST_POLL = (
    "--file_system_poll_wait_seconds",
    str(POLL_SECONDS),
    "--version_settle_seconds",
    "0.1",
)
ONES = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def answer(server: FerryProcess, model: str = "m") -> float:
    """The factor of the scale model that answered (its version number here)."""
    response = server.predict(model, ONES)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0][0]


def storage_status(server: FerryProcess, model: str = "m") -> dict:
    models = server.get("/v1/models").json()["models"]
    return next(m["storage_status"] for m in models if m["name"] == model)


def upload_version(store: MotoS3, tmp_path: Path, prefix: str, version: int) -> None:
    folder = tmp_path / f"upload-{version}"
    write_model(scale_model(float(version)), folder, version)
    store.upload_folder(folder, "models", prefix)


def test_a_root_of_s3_models_serves_new_versions_and_survives_the_store_going_away(
    moto_s3: MotoS3,  # noqa: F811
    start_server,
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="models")
    upload_version(moto_s3, tmp_path, "root/m", 1)
    cache = tmp_path / "cache"
    server = start_server(
        "s3://models/root", *FAST_POLL, "--model_cache_dir", str(cache), env=moto_s3.env
    )
    server.wait_version("m", 1)
    assert answer(server) == 1.0
    assert storage_status(server) == {"error_code": "OK", "error_message": ""}
    assert list(cache.rglob("model.onnx")), "versions load from the local cache"

    upload_version(moto_s3, tmp_path, "root/m", 2)
    server.wait_version("m", 2, timeout=10)
    assert answer(server) == 2.0

    moto_s3.stop()
    wait_until(
        lambda: storage_status(server)["error_code"] == "UNAVAILABLE",
        10,
        message="the storage error in /v1/models",
    )
    assert "s3://models/root" in storage_status(server)["error_message"]
    assert answer(server) == 2.0  # the loaded version keeps serving
    states = {
        s["version"]: s["state"] for s in server.get("/v1/models/m").json()["model_version_status"]
    }
    assert states["2"] == "AVAILABLE"

    moto_s3.start()
    wait_until(
        lambda: storage_status(server)["error_code"] == "OK", 40, message="storage recovered"
    )
    upload_version(moto_s3, tmp_path, "root/m", 3)
    server.wait_version("m", 3, timeout=10)
    assert answer(server) == 3.0
    assert "Traceback" not in server.log()


def test_an_unreachable_store_at_start_up_is_reported_until_it_answers(
    moto_s3: MotoS3,  # noqa: F811
    start_server,
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="models")
    upload_version(moto_s3, tmp_path, "one/m", 1)
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "s3://models/one/m" } }')
    moto_s3.stop()
    server = start_server(
        "--model_config_file",
        str(config),
        *FAST_POLL,
        "--model_cache_dir",
        str(tmp_path / "cache"),
        env=moto_s3.env,
    )
    wait_until(
        lambda: storage_status(server)["error_code"] == "UNAVAILABLE",
        10,
        message="the storage error in /v1/models",
    )
    missing = server.get("/v1/models/m")
    assert missing.status_code == 404
    assert "s3://models/one/m" in missing.json()["error"]
    moto_s3.start()
    server.wait_version("m", 1, timeout=40)
    assert answer(server) == 1.0
    assert storage_status(server)["error_code"] == "OK"


def test_model_base_path_and_endpoint_flag_take_s3_urls(
    moto_s3: MotoS3,  # noqa: F811
    start_server,
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="models")
    upload_version(moto_s3, tmp_path, "single", 4)
    env = {k: v for k, v in moto_s3.env.items() if k != "AWS_ENDPOINT_URL"}
    server = start_server(
        "--model_name",
        "m",
        "--model_base_path",
        "s3://models/single",
        "--s3_endpoint_url",
        moto_s3.endpoint_url,
        "--model_cache_dir",
        str(tmp_path / "cache"),
        *FAST_POLL,
        env={**env, "AWS_ENDPOINT_URL": ""},
    )
    server.wait_version("m", 4)
    assert answer(server) == 4.0
