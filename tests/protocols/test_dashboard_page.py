"""The status page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium): it lists the models, versions and states of a real `ferry serve`,
shows load errors, charts traffic, and shows a new version taking over without a reload.
Screenshots are written under the test's temporary folder (their paths are printed).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.models import scale_model, write_model
from support.server import FerryProcess

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (`make test` installs them)",
)
WAIT_S = 20.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FerryProcess]:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 1)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    process = FerryProcess(
        [str(root), "--file_system_poll_wait_seconds", "0.2"], tmp_path / "ferry.log"
    )
    try:
        process.wait_ready(timeout=60)
        process.wait_version("m", 1)
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {what}")


def _row(browser, model: str, version: int | str) -> list[str] | None:
    """The cells' texts of one model version's row, read in one step (the page rebuilds
    its table on every poll, so an element found earlier may be gone)."""
    return browser.execute_script(
        "const row = document.querySelector(arguments[0]);"
        "return row ? Array.from(row.cells, cell => cell.textContent) : null;",
        f'#models tr[data-model="{model}"][data-version="{version}"]',
    )


def _screenshot(browser, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"dashboard-{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 0
    print(f"screenshot: {path}")


def test_the_root_redirects_to_the_page_and_the_page_needs_nothing_from_elsewhere(
    server: FerryProcess,
) -> None:
    answer = server.get("/", allow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (307, "/dashboard")
    page = server.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Offline and behind firewalls: no script, style or font is fetched from anywhere.
    assert "http://" not in page.text and "https://" not in page.text
    assert "<script src" not in page.text


def test_the_page_shows_models_states_errors_and_traffic(
    server: FerryProcess, browser, tmp_path: Path
) -> None:
    browser.get(server.url + "/")

    row = _wait_for(lambda: _row(browser, "m", 1), "model m version 1")
    assert row[:3] == ["m", "1", "AVAILABLE"]
    cells = _wait_for(lambda: _row(browser, "broken", 1), "the broken model")
    assert cells[2] == "END"
    assert "broken" in cells[-1] or "onnx" in cells[-1].lower()  # the load error, shown

    session = requests.Session()
    for _ in range(40):
        body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
        assert session.post(server.url + "/v1/models/m:predict", json=body).status_code == 200
    _wait_for(
        lambda: (r := _row(browser, "m", 1)) and r[3] and float(r[3]) > 0,
        "a request rate above 0",
    )
    _screenshot(browser, tmp_path, "traffic")


def test_a_new_version_appears_without_a_reload(
    server: FerryProcess, browser, tmp_path: Path
) -> None:
    browser.get(server.url + "/dashboard")
    _wait_for(lambda: _row(browser, "m", 1), "model m version 1")
    browser.execute_script("window.sameDocument = true;")

    write_model(scale_model(3.0), Path(server.log_path).parent / "models" / "m", 2)

    row = _wait_for(
        lambda: (r := _row(browser, "m", 2)) and r[2] == "AVAILABLE" and r,
        "version 2 AVAILABLE",
    )
    assert row[1] == "2"
    assert browser.execute_script("return window.sameDocument === true;")  # never reloaded
    _screenshot(browser, tmp_path, "version-2")


def test_the_page_says_when_the_server_is_gone(server: FerryProcess, browser) -> None:
    browser.get(server.url + "/dashboard")
    _wait_for(lambda: _row(browser, "m", 1), "model m version 1")

    server.stop()

    from selenium.webdriver.common.by import By

    _wait_for(
        lambda: "cannot reach the server" in browser.find_element(By.ID, "updated").text,
        "that the server is unreachable",
    )
