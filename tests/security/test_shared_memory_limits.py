"""Attacks on the system shared memory extension: every one refused while a good client
keeps being served. A key is a POSIX shm name, never a path; offsets and sizes are
checked before any byte is read or written; regions are bounded in count and bytes; an
input window is held to --max_tensor_bytes; a client that shrinks its object gets an
error, not a crashed server; and shared memory is off unless the operator allows it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from support.models import write_model
from support.security import GoodClient
from support.server import FerryProcess
from support.triton_repository import simple_model
from tritonclient.utils import InferenceServerException

from ferry.errors import Unimplemented
from ferry.protocols.shared_memory import (
    ClientAccess,
    SharedMemoryOptions,
    SharedMemoryRegistry,
    grpc_client,
    rest_client,
)

MAX_REGIONS = 3
MAX_SHM_BYTES = 1 << 20
MAX_TENSOR_BYTES = 4096
ROW = {"datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
GOOD_BODY = {"inputs": [{"name": "INPUT0", **ROW}, {"name": "INPUT1", **ROW}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(simple_model(), root / "simple", 1)
    args = [
        str(root),
        "--allow_client_shm=true",
        f"--max_shm_regions={MAX_REGIONS}",
        f"--max_shm_bytes={MAX_SHM_BYTES}",
        f"--max_tensor_bytes={MAX_TENSOR_BYTES}",
    ]
    server = FerryProcess(args, tmp_path_factory.mktemp("logs") / "ferry.log").wait_ready()
    server.wait_version("simple", 1)
    yield server
    server.stop()


@pytest.fixture
def good(server: FerryProcess) -> Iterator[GoodClient]:
    with GoodClient(f"{server.url}/v2/models/simple/infer", GOOD_BODY) as client:
        yield client
        deadline = time.monotonic() + 5  # a quick attack: still see the client served
        while len(client.latencies) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    client.assert_served()


@pytest.fixture
def region() -> Iterator[tuple[str, shm.SharedMemoryRegion]]:
    key = f"/ferry_attack_{os.getpid()}"
    handle = shm.create_shared_memory_region("attack", key, 64 * 1024)
    yield key, handle
    shm.destroy_shared_memory_region(handle)


def register(server: FerryProcess, name: str, body: dict) -> requests.Response:
    url = f"{server.url}/v2/systemsharedmemory/region/{name}/register"
    return requests.post(url, json=body, timeout=5)


def unregister_all(server: FerryProcess) -> None:
    requests.post(f"{server.url}/v2/systemsharedmemory/unregister", timeout=5).raise_for_status()


def infer_from(server: FerryProcess, region: str, byte_size: int, offset: int, shape: list):
    shm_params = {
        "shared_memory_region": region,
        "shared_memory_byte_size": byte_size,
        "shared_memory_offset": offset,
    }
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": shape, "parameters": shm_params},
            {"name": "INPUT1", **ROW},
        ]
    }
    return requests.post(f"{server.url}/v2/models/simple/infer", json=body, timeout=5)


@pytest.mark.parametrize(
    "key", ["/../../etc/passwd", "/etc/passwd", "../passwd", "/", "//", "/..", "/a/b", "a\0b"]
)
def test_a_key_is_a_shm_name_never_a_path(server: FerryProcess, good: GoodClient, key: str):
    answer = register(server, "path", {"key": key, "byte_size": 8})
    assert answer.status_code == 400, answer.text
    assert "invalid shm key" in answer.json()["error"]


def test_links_and_folders_under_dev_shm_are_refused(
    server: FerryProcess, good: GoodClient, tmp_path: Path
) -> None:
    """shm_open never follows a link: a link in /dev/shm to a readable file is refused."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    link = Path(f"/dev/shm/ferry_link_{os.getpid()}")
    folder = Path(f"/dev/shm/ferry_dir_{os.getpid()}")
    link.symlink_to(secret)
    folder.mkdir()
    try:
        for path in (link, folder):
            answer = register(server, "link", {"key": f"/{path.name}", "byte_size": 8})
            assert answer.status_code == 500, answer.text
            assert answer.json()["error"] == f"Unable to open shared memory region: '/{path.name}'"
    finally:
        link.unlink()
        folder.rmdir()
    assert requests.get(f"{server.url}/v2/systemsharedmemory/status", timeout=5).json() == []


def test_a_window_beyond_the_object_is_refused_at_registration(
    server: FerryProcess, good: GoodClient, region
) -> None:
    key, _ = region
    for body in (
        {"key": key, "byte_size": 64 * 1024 + 1},
        {"key": key, "offset": 4096, "byte_size": 64 * 1024},
        {"key": key, "offset": 2**63, "byte_size": 8},
    ):
        answer = register(server, "big", body)
        assert answer.status_code == 400, answer.text
        assert (
            answer.json()["error"] == "failed to register shared memory region 'big': invalid args"
        )
    answer = register(server, "neg", {"key": key, "offset": -1, "byte_size": 8})
    assert answer.status_code == 400 and "Unable to parse 'offset'" in answer.json()["error"]


def test_inference_offsets_and_sizes_are_checked_against_the_region(
    server: FerryProcess, good: GoodClient, region
) -> None:
    key, _ = region
    assert register(server, "small", {"key": key, "byte_size": 64}).status_code == 200
    try:
        cases = [
            (64, 64, "Invalid offset for shared memory region: 'small'"),
            (128, 0, "Invalid offset + byte size for shared memory region: 'small'"),
            (2**62, 1, "Invalid offset + byte size for shared memory region: 'small'"),
            (64, 2**62, "Invalid offset for shared memory region: 'small'"),
        ]
        for byte_size, offset, message in cases:
            answer = infer_from(server, "small", byte_size, offset, [1, 16])
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == message
        assert infer_from(server, "small", 64, 0, [1, 16]).status_code == 200
    finally:
        unregister_all(server)


def test_regions_are_bounded_in_count_and_bytes(
    server: FerryProcess, good: GoodClient, region
) -> None:
    key, _ = region
    try:
        for index in range(MAX_REGIONS):
            assert register(server, f"r{index}", {"key": key, "byte_size": 64}).status_code == 200
        answer = register(server, "one_more", {"key": key, "byte_size": 64})
        assert answer.status_code == 400 and "--max_shm_regions" in answer.json()["error"]
    finally:
        unregister_all(server)
    big = Path(f"/dev/shm/ferry_big_{os.getpid()}")
    with open(big, "wb") as file:
        file.truncate(MAX_SHM_BYTES + 1)  # sparse: costs no memory
    try:
        answer = register(server, "big", {"key": f"/{big.name}", "byte_size": MAX_SHM_BYTES + 1})
        assert answer.status_code == 400 and "--max_shm_bytes" in answer.json()["error"]
    finally:
        big.unlink()
    assert requests.get(f"{server.url}/v2/systemsharedmemory/status", timeout=5).json() == []


def test_an_input_window_is_held_to_the_tensor_budget(
    server: FerryProcess, good: GoodClient, region
) -> None:
    key, _ = region
    assert register(server, "wide", {"key": key, "byte_size": 64 * 1024}).status_code == 200
    try:
        answer = infer_from(server, "wide", 64 * 1024, 0, [1, 16 * 1024])
        assert answer.status_code == 400, answer.text
        assert "--max_tensor_bytes" in answer.json()["error"]
    finally:
        unregister_all(server)


def test_an_object_shrunk_after_registration_is_an_error_not_a_crash(
    server: FerryProcess, good: GoodClient, region
) -> None:
    key, _ = region
    assert register(server, "shrunk", {"key": key, "byte_size": 4096}).status_code == 200
    try:
        os.truncate(f"/dev/shm{key}", 0)
        answer = infer_from(server, "shrunk", 64, 0, [1, 16])
        assert answer.status_code == 400, answer.text
        assert "was made smaller after it was registered" in answer.json()["error"]
    finally:
        os.truncate(f"/dev/shm{key}", 64 * 1024)
        unregister_all(server)
    assert server.process.poll() is None


def test_shared_memory_is_off_unless_the_operator_allows_it(
    start_server, model_root: Path, region
) -> None:
    write_model(simple_model(), model_root / "simple", 1)
    server = start_server(str(model_root))
    server.wait_version("simple", 1)
    key, _ = region
    disabled = (
        "Client shared memory is disabled. Start the server with "
        "'--allow-client-shm=true' to enable."
    )
    answer = register(server, "r", {"key": key, "byte_size": 64})
    assert (answer.status_code, answer.json()["error"]) == (501, disabled)
    client = grpcclient.InferenceServerClient(server.grpc_target)
    with pytest.raises(InferenceServerException) as error:
        client.register_system_shared_memory("r", key, 64)
    assert error.value.message() == disabled
    assert error.value.status() == "StatusCode.UNIMPLEMENTED"
    # Naming a region in inference is refused alike (names are global, so this matters
    # in loopback mode), and the extension is not advertised.
    answer = infer_from(server, "r", 64, 0, [1, 16])
    assert (answer.status_code, answer.json()["error"]) == (501, disabled)
    assert "system_shared_memory" not in client.get_server_metadata().extensions
    client.close()
    ok = requests.post(f"{server.url}/v2/models/simple/infer", json=GOOD_BODY, timeout=5)
    assert ok.status_code == 200
    assert ok.json()["outputs"][0]["data"] == list(np.arange(16) * 2)


def test_loopback_mode_admits_only_clients_on_this_host(region) -> None:
    """The peer forms grpc.aio and uvicorn report, against a real registry."""
    key, _ = region
    registry = SharedMemoryRegistry(SharedMemoryOptions(ClientAccess.LOOPBACK))
    for local in (
        grpc_client("ipv4:127.0.0.1:5000"),
        grpc_client("ipv6:[::1]:5000"),
        grpc_client("ipv6:%5B::1%5D:5000"),
        grpc_client("ipv6:[::ffff:127.0.0.1]:5000"),
        grpc_client("unix:/tmp/ferry.sock"),
        rest_client(("127.0.0.2", 5000)),
    ):
        registry.register(local, "mine", key, 0, 64)
        registry.unregister(local, "mine")
    for remote in (
        grpc_client("ipv4:10.1.2.3:5000"),
        grpc_client("ipv6:[2001:db8::1]:5000"),
        rest_client(("192.168.1.9", 5000)),
    ):
        with pytest.raises(Unimplemented) as error:
            registry.register(remote, "theirs", key, 0, 64)
        assert "--allow_client_shm=loopback" in error.value.message
    assert registry.status("") == []
    registry.close()
