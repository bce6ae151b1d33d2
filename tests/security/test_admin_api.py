"""The admin APIs are the operator's (issue 11, Build 2).

Against real `ferry serve` processes: without `--enable_model_control`, TF Serving's
HandleReloadConfigRequest and the V2 repository load/unload (REST and gRPC) are refused
with Triton's code (UNAVAILABLE, HTTP 503) and a message that says how to turn them on,
and nothing changes; with it, they work, but a reload may only read base paths under
the operator's roots; with `--auth`, they need a key with the `admin` scope. Every
attack's model folder holds a `model.py` (with `allow_code = true` in its own
ferry.toml) that writes a marker file when imported: it never exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from support.models import scale_model, write_model
from support.security import marker_file
from support.server import FerryProcess

from ferry.auth.keys import ADMIN, INFER, TOKEN, add_key
from ferry.protos import message_class

OFF_V2 = (
    "explicit model load / unload is not allowed: model control is off "
    "(start ferry serve with --enable_model_control to allow it)"
)
OFF_RELOAD = (
    "HandleReloadConfigRequest is not allowed: model control is off "
    "(start ferry serve with --enable_model_control to allow it)"
)
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
V2 = "/inference.GRPCInferenceService/"
X = [[1.0, 2.0, 3.0, 4.0]]


def attack_folder(folder: Path, marker: Path) -> Path:
    """A model folder whose code, if ever imported, writes `marker`."""
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "class Model:\n"
        "    signature = {'inputs': {'x': {'dtype': 'float32', 'shape': [-1, 4]}},\n"
        "                 'outputs': {'y': {'dtype': 'float32', 'shape': [-1, 4]}}}\n"
        "    def load(self, version_dir):\n        pass\n"
        "    def predict(self, inputs):\n        return {'y': inputs['x']}\n"
    )
    (folder / "ferry.toml").write_text("allow_code = true\nallow_pickle = true\n")
    return folder


def reload_request(*models: tuple[str, str]) -> bytes:
    request = message_class("tensorflow.serving.ReloadConfigRequest")()
    request.config.model_config_list.SetInParent()  # present even when it lists nothing
    for name, base_path in models:
        config = request.config.model_config_list.config.add()
        config.name = name
        config.base_path = base_path
    return request.SerializeToString()


def call(
    server: FerryProcess, method: str, payload: bytes, token: str | None = None
) -> tuple[grpc.StatusCode, str, bytes]:
    """One raw unary call; (status code, details, response bytes)."""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(method)
        try:
            return grpc.StatusCode.OK, "", rpc(payload, timeout=30, metadata=metadata)
        except grpc.RpcError as error:
            return error.code(), error.details(), b""


def v2_grpc(method: str, model: str) -> tuple[str, bytes]:
    request = message_class(f"inference.{method}Request")(model_name=model)
    return V2 + method, request.SerializeToString()


def reload_status(response: bytes) -> Message:
    return message_class("tensorflow.serving.ReloadConfigResponse").FromString(response).status


def predict(server: FerryProcess, model: str, token: str | None = None) -> int:
    """The HTTP status of a TF Serving predict (200 only with the right answer)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = server.post(f"/v1/models/{model}:predict", json={"instances": X}, headers=headers)
    if response.status_code == 200:
        assert response.json()["predictions"] == [[2, 4, 6, 8]]
    return response.status_code


def serves(server: FerryProcess, model: str, token: str | None = None) -> bool:
    return predict(server, model, token) == 200


def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(scale_model(2.0), root / "spare", 1)
    return root


# -- off by default ---------------------------------------------------------------------------


def test_without_the_flag_every_admin_api_is_refused_and_nothing_changes(
    tmp_path: Path, start_server
) -> None:
    root = models_root(tmp_path)
    marker = marker_file(tmp_path)
    evil = attack_folder(tmp_path / "elsewhere" / "evil", marker)
    server = start_server(str(root))

    for payload in (reload_request(("evil", str(evil))), reload_request()):
        code, details, _ = call(server, RELOAD, payload)
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, OFF_RELOAD)
    for action in ("load", "unload"):
        response = server.post(f"/v2/repository/models/scale/{action}")
        assert response.status_code == 503
        assert response.json() == {"error": OFF_V2}
        code, details, _ = call(server, *v2_grpc(f"RepositoryModel{action.title()}", "scale"))
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, OFF_V2)
    # An unknown model gets the same answer: the refusal says nothing about the repository.
    assert server.post("/v2/repository/models/nope/unload").json() == {"error": OFF_V2}

    assert serves(server, "scale") and serves(server, "spare")
    assert {e["name"] for e in server.post("/v2/repository/index").json()} == {"scale", "spare"}
    code, _, _ = call(server, V2 + "RepositoryIndex", b"")
    assert code == grpc.StatusCode.OK  # read-only queries stay open
    assert not marker.exists()


# -- on, within the operator's roots --------------------------------------------------------


@pytest.fixture
def controlled(tmp_path: Path, start_server) -> FerryProcess:
    root = models_root(tmp_path)
    return start_server(str(root), "--enable_model_control")


def test_with_the_flag_unload_load_and_reload_work(controlled: FerryProcess, tmp_path) -> None:
    root = tmp_path / "models"

    assert controlled.post("/v2/repository/models/spare/unload", timeout=30).status_code == 200
    assert predict(controlled, "spare") == 404
    code, _, _ = call(controlled, *v2_grpc("RepositoryModelLoad", "spare"))
    assert code == grpc.StatusCode.OK
    assert serves(controlled, "spare")

    code, _, response = call(controlled, RELOAD, reload_request(("renamed", str(root / "scale"))))
    assert code == grpc.StatusCode.OK and reload_status(response).error_code == 0
    assert serves(controlled, "renamed")
    assert predict(controlled, "scale") == 404


def outside_paths(tmp_path: Path, marker: Path) -> dict[str, str]:
    """Base paths that leave the root, each spelled a different way."""
    root = tmp_path / "models"
    evil = attack_folder(tmp_path / "elsewhere" / "evil", marker)
    os.symlink(evil, root / ".link")  # hidden: the root's own poll does not serve it
    (tmp_path / "models-evil").symlink_to(evil)
    return {
        "absolute": str(evil),
        "dot-dot": str(root / ".." / "elsewhere" / "evil"),
        "symlink in the root": str(root / ".link"),
        "sibling with the root as prefix": str(tmp_path / "models-evil"),
        "relative to the server's folder": os.path.relpath(evil, Path.cwd()),
        "object storage": "s3://attacker-bucket/evil",
    }


def test_a_reload_outside_the_roots_is_refused_and_nothing_changes(
    controlled: FerryProcess, tmp_path: Path
) -> None:
    marker = marker_file(tmp_path)
    for how, base_path in outside_paths(tmp_path, marker).items():
        payload = reload_request(("scale", str(tmp_path / "models" / "scale")), ("evil", base_path))

        code, details, _ = call(controlled, RELOAD, payload)

        assert code == grpc.StatusCode.PERMISSION_DENIED, (how, details)
        # A relative base path is read against the server's working folder, and named so.
        shown = base_path if base_path.startswith(("/", "s3://")) else Path.cwd() / base_path
        assert details == (
            f"model 'evil': base_path {shown} is outside the folders this server may "
            "load models from (ferry serve --model_roots)"
        ), how
    assert serves(controlled, "scale") and serves(controlled, "spare")
    assert predict(controlled, "evil") == 404
    assert not marker.exists()


def test_model_roots_widen_and_narrow_what_a_reload_may_use(tmp_path: Path, start_server) -> None:
    root = models_root(tmp_path)
    extra = tmp_path / "extra"
    write_model(scale_model(2.0), extra / "more", 1)
    server = start_server(
        str(root), "--enable_model_control", "--model_roots", f"{extra},s3://bucket/models"
    )

    code, details, _ = call(server, RELOAD, reload_request(("scale", str(root / "scale"))))
    assert code == grpc.StatusCode.PERMISSION_DENIED, "the start-up root no longer counts"
    assert "--model_roots" in details
    for s3_path in ("s3://bucket/models2/x", "s3://bucket/models/../x", "s3://other/models/x"):
        code, _, _ = call(server, RELOAD, reload_request(("m", s3_path)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, s3_path
    code, _, response = call(server, RELOAD, reload_request(("more", str(extra / "more"))))
    assert code == grpc.StatusCode.OK and reload_status(response).error_code == 0
    assert serves(server, "more")


def test_an_empty_model_config_list_unloads_everything_when_control_is_on(
    controlled: FerryProcess,
) -> None:
    code, _, response = call(controlled, RELOAD, reload_request())

    assert code == grpc.StatusCode.OK and reload_status(response).error_code == 0
    assert predict(controlled, "scale") == 404
    assert "every model is unloaded" in controlled.log()


# -- with --auth: admin keys only ------------------------------------------------------------


def test_with_auth_an_infer_key_is_refused_and_an_admin_key_allowed(
    tmp_path: Path, start_server
) -> None:
    root = models_root(tmp_path)
    keys = tmp_path / "keys.json"
    infer_key = add_key(keys, TOKEN, "app").secret
    admin_key = add_key(keys, TOKEN, "ops", (ADMIN,)).secret
    both_key = add_key(keys, TOKEN, "ci", (INFER, ADMIN)).secret
    server = start_server(str(root), "--enable_model_control", "--auth", str(keys))
    denied = (
        "This key may not call the admin APIs (model control): it lacks the 'admin' scope "
        "(ferry keys create --scope admin)"
    )

    for path in ("/v2/repository/models/spare/unload", "/V2/Repository/Models/spare/unload"):
        response = server.post(path, headers={"Authorization": f"Bearer {infer_key}"})
        assert response.status_code == 403
        assert response.json() == {"error": denied}
    for method, payload in (
        (RELOAD, reload_request()),
        v2_grpc("RepositoryModelUnload", "spare"),
        v2_grpc("RepositoryModelLoad", "spare"),
    ):
        assert call(server, method, payload, infer_key)[:2] == (
            grpc.StatusCode.PERMISSION_DENIED,
            denied,
        )
    assert serves(server, "spare", infer_key)
    index = server.post("/v2/repository/index", headers={"Authorization": f"Bearer {infer_key}"})
    assert index.status_code == 200  # read-only: an infer API

    # An admin-only key may not infer; the admin APIs answer it.
    assert predict(server, "spare", admin_key) == 403
    code, _, _ = call(server, *v2_grpc("RepositoryModelUnload", "spare"), admin_key)
    assert code == grpc.StatusCode.OK
    assert not serves(server, "spare", both_key)
    response = server.post(
        "/v2/repository/models/spare/load",
        headers={"Authorization": f"Bearer {both_key}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert serves(server, "spare", both_key)


def test_with_auth_an_admin_key_still_needs_the_flag(tmp_path: Path, start_server) -> None:
    root = models_root(tmp_path)
    keys = tmp_path / "keys.json"
    admin_key = add_key(keys, TOKEN, "ops", (INFER, ADMIN)).secret
    server = start_server(str(root), "--auth", str(keys))

    code, details, _ = call(server, RELOAD, reload_request(), admin_key)
    response = server.post(
        "/v2/repository/models/scale/unload", headers={"Authorization": f"Bearer {admin_key}"}
    )

    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, OFF_RELOAD)
    assert response.status_code == 503 and response.json() == {"error": OFF_V2}
    assert serves(server, "scale", admin_key)
