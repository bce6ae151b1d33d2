"""schemathesis against a real `ferry serve` (issue 15, Build 3): requests generated from
the served `/openapi.json` for every safe operation and every inference operation on a
small model, a bounded number per operation. No answer may be a server error, and each
must match the description: a documented status code, a documented content type and a
body that fits the documented schema.

The control operations (V2 repository load/unload, shared memory registration) are left
out: they change the server, and are refused anyway without --enable_model_control and
--allow_client_shm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.models import scale_model, write_model

from ferry.protocols.openapi import OPENAPI_PATH

MODEL = "scale"
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
INFERENCE_SUFFIXES = (":predict", ":classify", ":regress", "/infer", "/invocations")


def is_checked(method: str, path: str) -> bool:
    return method == "GET" or path.endswith(INFERENCE_SUFFIXES)


def test_every_answer_matches_the_description(start_server, model_root: Path) -> None:
    write_model(scale_model(2.0), model_root / MODEL, 1)
    server = start_server(str(model_root))
    schema = schemathesis.openapi.from_url(server.url + OPENAPI_PATH)
    operations = [result.ok() for result in schema.get_all_operations()]
    chosen = [op for op in operations if is_checked(op.method.upper(), op.path)]
    assert len(chosen) >= 40, [f"{op.method} {op.path}" for op in chosen]
    failures: list[str] = []
    for operation in chosen:
        fixed = {}
        names = {p.name for p in operation.path_parameters}
        if "model_name" in names:
            fixed["model_name"] = MODEL  # a real model, so inference bodies are decoded
        if "version" in names and operation.method.upper() == "POST":
            fixed["version"] = 1  # GETs try any version: their error answers are checked too

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(path_parameters=fixed))
        def check(case) -> None:
            case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # report every operation that fails
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert server.process.poll() is None, "the server died"
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
