"""The OpenAPI description and the server's routes agree (issue 15, Build 3).

Every route and POST prefix a server registers is described by at least one operation,
and every described operation reaches a handler: on the route objects of servers built
with each feature set, and over HTTP on a real `ferry serve`, where no operation of
`/openapi.json` may fall through to the router's own 404 or 405. `/docs` renders the
JSON with nothing loaded from elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from support.models import scale_model, write_model

from ferry.protocols.openapi import (
    METRICS_PLACEHOLDER,
    OPENAPI_PATH,
    OPERATIONS,
    covers,
    registered_operations,
)
from ferry.protocols.sagemaker import SageMakerOptions
from ferry.protocols.sagemaker_mme import MultiModelOptions
from ferry.repository.catalog import FixedCatalog
from ferry.server import FerryServer, ServerOptions

PLAIN = ServerOptions()
SAGEMAKER = ServerOptions(sagemaker=SageMakerOptions())
MULTI_MODEL = ServerOptions(sagemaker=SageMakerOptions(), multi_model=MultiModelOptions())
NO_METRICS = ServerOptions(prometheus_path=None)
# What ferry's protocols answer for a path they have no operation for.
UNKNOWN_PATH_ERRORS = ("Malformed request", "Not Found", "Not found: ")
CONFIGURATIONS = {
    "plain": PLAIN,
    "sagemaker": SAGEMAKER,
    "multi_model": MULTI_MODEL,
    "no_metrics": NO_METRICS,
}


def _http_app(options: ServerOptions):
    """The server's HttpApp (under the request-id layer and, with --sagemaker, /tfs/)."""
    return FerryServer(FixedCatalog([]), options).http_app


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_every_registered_route_and_prefix_is_described(name: str) -> None:
    options = CONFIGURATIONS[name]
    app = _http_app(options)
    described = registered_operations(app.routes, app.post_prefixes, options.prometheus_path)
    for route in app.routes:
        methods = sorted((route.methods or set()) - {"HEAD"})
        assert any(covers([route], [], op) for op in described if op.method in methods), (
            f"route {methods} {route.path} has no operation in ferry.protocols.openapi"
        )
    for prefix in app.post_prefixes:
        assert any(
            op.method == "POST" and op.sample_path().lower().startswith(prefix) for op in described
        ), f"POST prefix {prefix} has no operation in ferry.protocols.openapi"


def test_every_described_operation_is_registered_by_some_server() -> None:
    """No operation in the table is dead: each one is answered with some set of flags."""
    reached = set()
    for options in CONFIGURATIONS.values():
        app = _http_app(options)
        for op in registered_operations(app.routes, app.post_prefixes, options.prometheus_path):
            path = METRICS_PLACEHOLDER if op.path == options.prometheus_path else op.path
            reached.add((op.method, op.summary, path))
    missing = [
        f"{op.method} {op.path}"
        for op in OPERATIONS
        if (op.method, op.summary, op.path) not in reached
    ]
    assert not missing, f"described but answered by no server: {missing}"


def test_features_change_the_description() -> None:
    def paths(options: ServerOptions) -> set[str]:
        app = _http_app(options)
        ops = registered_operations(app.routes, app.post_prefixes, options.prometheus_path)
        return {op.path for op in ops}

    plain, sagemaker, multi = paths(PLAIN), paths(SAGEMAKER), paths(MULTI_MODEL)
    assert "/ping" not in plain and "/invocations" not in plain
    assert {"/ping", "/invocations"} <= sagemaker and "/models" not in sagemaker
    assert {"/models", "/models/{model_name}", "/models/{model_name}/invoke"} <= multi
    assert "/monitoring/prometheus/metrics" in plain
    assert "/monitoring/prometheus/metrics" not in paths(NO_METRICS)


@pytest.fixture
def server(start_server, model_root: Path):
    write_model(scale_model(2.0), model_root / "scale", 1)
    return start_server(str(model_root))


def test_the_served_description_is_valid_openapi_and_every_path_reaches_a_handler(
    server,
) -> None:
    answer = server.get(OPENAPI_PATH)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    spec = answer.json()
    validate(spec)  # raises on an invalid OpenAPI 3.1 document
    assert spec["openapi"].startswith("3.1")
    samples = {"model_name": "scale", "version": "1", "label": "stable", "region_name": "r"}
    samples["endpoint_name"] = "e"
    checked = 0
    for template, methods in spec["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: samples[m[1]], template)
        for method in methods:
            response = server.session.request(
                method.upper(), server.url + path, data=b"{}", timeout=10, allow_redirects=False
            )
            where = f"{method.upper()} {path}: {response.status_code} {response.text[:200]}"
            # Starlette's own "no such route" answers are plain text, and ferry's
            # protocols answer a path they do not know with these errors.
            assert response.status_code != 405, where
            assert response.text not in ("Not Found", "Method Not Allowed"), where
            if response.headers.get("content-type", "").startswith("application/json"):
                error = response.json().get("error") if response.text.startswith("{") else None
                assert not str(error or "").startswith(UNKNOWN_PATH_ERRORS), where
            documented = methods[method]["responses"].keys()
            code = response.status_code
            assert str(code) in documented or f"{code // 100}XX" in documented, where
            if method == "get" and not {"label", "region_name"} & set(
                re.findall(r"\{(\w+)\}", template)
            ):
                assert response.status_code in (200, 307), where  # model scale, version 1
            checked += 1
    assert checked >= 50


def test_docs_page_renders_the_description_without_loading_anything_from_elsewhere(
    server,
) -> None:
    page = server.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'fetch("{OPENAPI_PATH}")' in html
    # No script, style or font from another origin: the page must work offline.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html
