"""Reading inputs from files: `.npy` (one array), `.npz` (arrays by input name) and `.json`
(a TF Serving `:predict` body, `{"instances": ...}` or `{"inputs": ...}`, or a bare list).

numpy and the standard library only, like the rest of `ferry.edge`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .signature import EdgeInputError


def read_inputs(path: Path, input_names: list[str]) -> Any:
    """What `EdgeModel.predict` takes: one array, or a dict of arrays by input name."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".json":
        return inputs_from_json(json.loads(path.read_text()), input_names)
    raise EdgeInputError(f"{path.name}: inputs are read from .npy, .npz or .json files")


def inputs_from_json(body: Any, input_names: list[str]) -> Any:
    """Row (`instances`) or columnar (`inputs`) TF Serving JSON, or a bare list of rows."""
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        raise EdgeInputError("JSON inputs must be a list or a TF Serving :predict object")
    if "inputs" in body:
        return body["inputs"]
    if "instances" not in body:
        raise EdgeInputError("Missing 'inputs' or 'instances' key")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise EdgeInputError("'instances' must be a non-empty JSON array")
    if not isinstance(instances[0], dict):
        return instances
    columns: dict[str, list[Any]] = {}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or set(instance) != set(instances[0]):
            raise EdgeInputError(
                f"Instance {index} does not have the same inputs as instance 0 "
                f"(expected {sorted(input_names)})"
            )
        for name, value in instance.items():
            columns.setdefault(name, []).append(value)
    return columns
