"""`--cors_origins`: only the listed web origins may call the REST APIs from a page.
Real preflights and requests over HTTP, TF Serving's `--rest_api_enable_cors_support`
narrowed by it, wrong values refused at start-up, and a real headless Chromium `fetch`
from a page of a listed origin and of another one.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.models import scale_model, write_model
from support.server import FerryProcess

APP = "https://app.example"
OTHER = "https://other.example"
ROWS = {"instances": [[1.0, 1.0, 1.0, 1.0]]}
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def model_args(tmp_path: Path) -> list[str]:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    return ["--model_name=m", f"--model_base_path={tmp_path / 'm'}"]


def preflight(
    server: FerryProcess, origin: str, method: str = "POST", headers: str = ""
) -> requests.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return server.session.options(
        f"{server.url}/v1/models/m:predict", headers=request_headers, timeout=5
    )


def vary(answer: requests.Response) -> set[str]:
    return {part.strip().lower() for part in answer.headers.get("vary", "").split(",")}


def test_a_listed_origins_preflight_gets_the_policy(start_server, model_args) -> None:
    # Written as an operator might: upper case and the default port are folded away.
    server = start_server(
        *model_args,
        "--cors_origins=HTTPS://App.Example:443,http://127.0.0.1:9",
        "--cors_allow_credentials",
        "--cors_max_age_seconds=120",
    )

    answer = preflight(server, APP, headers="Content-Type, Authorization, X-Amz-Date")

    assert answer.status_code == 204
    assert answer.content == b""
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-allow-methods"] == "GET, HEAD, POST, DELETE"
    allowed_headers = answer.headers["access-control-allow-headers"]
    assert allowed_headers == "content-type, authorization, x-amz-date"
    assert answer.headers["access-control-max-age"] == "120"
    assert "origin" in vary(answer)


def test_preflights_outside_the_policy_are_refused_with_a_reason(start_server, model_args) -> None:
    server = start_server(*model_args, f"--cors_origins={APP}")

    other_origin = preflight(server, OTHER)
    bad_method = preflight(server, APP, method="PUT")
    bad_header = preflight(server, APP, headers="content-type, x-evil")

    for answer in (other_origin, bad_method, bad_header):
        assert answer.status_code == 403
        assert "access-control-allow-origin" not in answer.headers
        assert "origin" in vary(answer)
    assert OTHER in other_origin.json()["error"]
    assert "--cors_origins" in other_origin.json()["error"]
    assert "'PUT'" in bad_method.json()["error"]
    assert bad_header.json()["error"].endswith("not allowed: x-evil")


def test_answers_carry_cors_headers_only_for_listed_origins(start_server, model_args) -> None:
    server = start_server(*model_args, f"--cors_origins={APP}", "--cors_allow_credentials")

    listed = server.post("/v1/models/m:predict", json=ROWS, headers={"Origin": APP})
    other = server.post("/v1/models/m:predict", json=ROWS, headers={"Origin": OTHER})
    no_origin = server.get("/v1/models/m")
    missing = server.get("/v1/models/nope", headers={"Origin": APP})

    assert listed.json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}
    assert listed.headers["access-control-allow-origin"] == APP
    assert listed.headers["access-control-allow-credentials"] == "true"
    assert "Inference-Header-Content-Length" in listed.headers["access-control-expose-headers"]
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == APP
    assert other.status_code == 200
    for answer in (other, no_origin):
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-credentials" not in answer.headers
    for answer in (listed, other, no_origin, missing):
        assert "origin" in vary(answer)


def test_any_origin_gets_a_star_and_credentials_stay_with_named_origins(
    start_server, model_args
) -> None:
    server = start_server(
        *model_args, "--cors_origins=*", f"--cors_origins={APP}", "--cors_allow_credentials"
    )

    named = server.get("/v1/models/m", headers={"Origin": APP})
    anyone = server.get("/v1/models/m", headers={"Origin": OTHER})
    anyone_preflight = preflight(server, OTHER, headers="content-type")

    assert named.headers["access-control-allow-origin"] == APP
    assert named.headers["access-control-allow-credentials"] == "true"
    for answer in (anyone, anyone_preflight):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
    assert anyone_preflight.status_code == 204


def test_cors_origins_narrows_tf_servings_cors_flag(start_server, model_args) -> None:
    server = start_server(*model_args, "--rest_api_enable_cors_support", f"--cors_origins={APP}")

    listed = server.get("/v1/models/m", headers={"Origin": APP})
    other = server.get("/v1/models/m", headers={"Origin": OTHER})

    assert listed.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-origin" not in other.headers
    assert preflight(server, OTHER).status_code == 403
    assert "only https://app.example get CORS headers" in server.log()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cors_origins=null"], "cannot be allowed"),
        (["--cors_origins=https://app.example/"], "no path"),
        (["--cors_origins=app.example"], "is not an origin"),
        (["--cors_origins=*", "--cors_allow_credentials"], "only to origins listed by name"),
        (["--cors_allow_credentials"], "needs --cors_origins"),
    ],
)
def test_wrong_cors_flags_stop_start_up(model_args, flags: list[str], message: str) -> None:
    failed = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve", "--host", "127.0.0.1", *model_args, *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert failed.returncode == 2, failed.stderr
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr


# A real browser: a page of one origin fetches ferry's predict API on another.

PAGE = """<!doctype html><title>caller</title><script>
async function callFerry(url) {
  try {
    const answer = await fetch(url, {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(ROWS)});
    return {status: answer.status, body: await answer.json()};
  } catch (error) { return {error: String(error)}; }
}
</script>""".replace("ROWS", json.dumps(ROWS))


@pytest.fixture
def page_origins(tmp_path: Path) -> Iterator[list[str]]:
    """Two static web servers of the same page: two origins (their ports differ)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(PAGE)
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site")
    )
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (`make test` installs them)",
)
def test_a_browser_page_of_a_listed_origin_can_call_ferry_and_another_cannot(
    start_server, model_args, page_origins: list[str]
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    listed, unlisted = page_origins
    server = start_server(*model_args, f"--cors_origins={listed}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_script_timeout(15)
    call = "callFerry(arguments[0]).then(arguments[1]);"
    predict_url = f"{server.url}/v1/models/m:predict"
    try:
        browser.get(listed + "/index.html")
        allowed = browser.execute_async_script(call, predict_url)
        browser.get(unlisted + "/index.html")
        refused = browser.execute_async_script(call, predict_url)
    finally:
        browser.quit()

    assert allowed == {"status": 200, "body": {"predictions": [[2.0, 2.0, 2.0, 2.0]]}}
    assert "Failed to fetch" in refused["error"]
