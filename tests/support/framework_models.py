"""Helpers for tests that save framework models (PyTorch, scikit-learn, custom Python)
with `ferry.save` and serve them from a real `ferry serve` process.

One server per test module serves every model the module needs (framework imports and
process start-up are the slow part); `settled_status` waits until each model's newest
version has either loaded or failed, so a test can check both outcomes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from support.server import FerryProcess, wait_until


def start_repository_server(
    root: Path, log_path: Path, *args: str, timeout: float = 120.0
) -> FerryProcess:
    """`ferry serve ROOT` with polling once at start-up (the models are all written);
    stopped again if it never gets ready."""
    server = FerryProcess([str(root), "--file_system_poll_wait_seconds", "0", *args], log_path)
    try:
        return server.wait_ready(timeout=timeout)
    except BaseException:
        server.stop()
        raise


def version_status(server: FerryProcess, model: str) -> dict:
    """The newest version's status entry from TF Serving's GetModelStatus REST form."""
    body = server.get(f"/v1/models/{model}").json()
    return body["model_version_status"][0]


def settled_status(server: FerryProcess, model: str, timeout: float = 60.0) -> dict:
    """Wait until the model's newest version is AVAILABLE or has failed (END), and
    return its status entry."""

    def settled() -> bool:
        response = server.get(f"/v1/models/{model}")
        if response.status_code != 200:
            return False
        return version_status(server, model)["state"] in ("AVAILABLE", "END")

    wait_until(settled, timeout, message=f"{model} loaded or failed")
    return version_status(server, model)


def predict_rows(server: FerryProcess, model: str, rows: np.ndarray) -> dict | list:
    """`:predict` in the row format; the `predictions` of a 200 answer."""
    response = server.predict(model, {"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def predict_columns(server: FerryProcess, model: str, inputs: dict[str, np.ndarray]) -> dict:
    """`:predict` in the columnar format; the `outputs` of a 200 answer (a dict, also
    for a single output, so tests can index it by name)."""
    body = {"inputs": {name: value.tolist() for name, value in inputs.items()}}
    response = server.predict(model, body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    return outputs if isinstance(outputs, dict) else {"": outputs}
