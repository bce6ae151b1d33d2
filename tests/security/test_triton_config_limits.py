"""A Triton config need not be the operator's: with `--enable_model_control` a load
request sends one over the network (Triton's config override), and it names label files
that ferry then reads into memory. Against real `ferry serve` processes: a config over
`--max_triton_config_bytes` is refused before it is parsed, a label file over
`--max_triton_label_file_bytes` fails the load, each message names its flag, the model
keeps serving what it served, and the same request under the bound loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from support.models import scale_model, write_model
from support.server import FerryProcess
from tritonclient.utils import InferenceServerException

LABELS = "".join(f"label-{i}\n" for i in range(20))


def _folder(root: Path) -> Path:
    write_model(scale_model(2.0), root / "m", 1)
    (root / "m" / "labels.txt").write_text(LABELS)
    return root


def _client(server: FerryProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def _still_serves(server: FerryProcess) -> None:
    response = server.predict("m", {"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [[2.0, 4.0, 6.0, 8.0]]


def test_a_config_override_over_the_bound_is_refused(tmp_path: Path, start_server) -> None:
    root = _folder(tmp_path / "models")
    server = start_server(str(root), "--enable_model_control", "--max_triton_config_bytes", "100")
    server.wait_version("m", 1)
    small = json.dumps({"backend": "onnxruntime"})
    large = json.dumps(
        {"backend": "onnxruntime", "parameters": {"pad": {"string_value": "x" * 100}}}
    )
    assert len(small) <= 100 < len(large)

    with pytest.raises(InferenceServerException) as refused:
        _client(server).load_model("m", config=large)

    message = refused.value.message()
    assert "failed to load 'm'" in message
    assert f"{len(large)} bytes, more than --max_triton_config_bytes (100)" in message
    _still_serves(server)
    _client(server).load_model("m", config=small)  # under the bound: loads
    assert _client(server).is_model_ready("m", "1")


@pytest.mark.parametrize(("bound", "loads"), [(len(LABELS) - 1, False), (len(LABELS), True)])
def test_a_label_file_over_the_bound_fails_the_load(
    bound: int, loads: bool, tmp_path: Path, start_server
) -> None:
    root = _folder(tmp_path / "models")
    server = start_server(
        str(root), "--enable_model_control", "--max_triton_label_file_bytes", str(bound)
    )
    server.wait_version("m", 1)
    override = json.dumps({"output": [{"name": "y", "label_filename": "labels.txt"}]})

    if loads:
        _client(server).load_model("m", config=override)
        config = _client(server).get_model_config("m")
        assert config["output"][0]["label_filename"] == "labels.txt"
        return
    with pytest.raises(InferenceServerException) as refused:
        _client(server).load_model("m", config=override)
    assert f"more than --max_triton_label_file_bytes ({bound})" in refused.value.message()
    _still_serves(server)
