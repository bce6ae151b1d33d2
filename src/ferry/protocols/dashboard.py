"""The status page: `/dashboard` (and `/`, which redirects there), a self-contained HTML
page that polls `/dashboard/status.json` and draws ferry's own numbers.

Why a page: a newcomer who opens the server's address in a browser should see what it
serves (models, versions, their states and load errors) and how it is doing (request
rate, latency, batch sizes) without installing Prometheus and Grafana. The page has no
build step and loads nothing from elsewhere (it works offline and behind firewalls): its
script and styles are inline in `dashboard.html`, and its charts are drawn on canvases.

The JSON carries counters and histogram sums as they stand; the page turns the
difference between two polls into rates and means, so the server keeps no history.
It reports what `GET /v1/models/{m}` and the Prometheus endpoint already report to the
same clients (under `--auth`, any valid key).
"""

from __future__ import annotations

import time
from collections import defaultdict
from functools import cache
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ferry.errors import FerryError
from ferry.manager import ModelManager
from ferry.metrics import Metrics

DASHBOARD_PATH = "/dashboard"
STATUS_PATH = "/dashboard/status.json"
# The page polls this often (milliseconds); also the refresh hint in the JSON.
POLL_MS = 2000


@cache
def page_html() -> str:
    return files("ferry.protocols").joinpath("dashboard.html").read_text(encoding="utf-8")


class Dashboard:
    """Routes of the status page over one manager and its metrics."""

    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route(DASHBOARD_PATH, self.page, methods=["GET"]),
            Route(STATUS_PATH, self.status, methods=["GET"]),
        ]

    async def root(self, request: Request) -> Response:
        return RedirectResponse(DASHBOARD_PATH, status_code=307)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(page_html(), headers={"Cache-Control": "no-store"})

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.snapshot(), headers={"Cache-Control": "no-store"})

    def snapshot(self) -> dict[str, Any]:
        """Every model's versions and states, and its counters as they stand."""
        counters = _model_counters(self.metrics)
        models = []
        for name in self.manager.model_names():
            try:
                records = self.manager.version_status(name)
            except FerryError as exc:  # no version found yet: say why
                versions = []
                problem = exc.message
            else:
                versions = [
                    {
                        "version": r.version,
                        "state": r.state.name,
                        "error": r.error_message,
                    }
                    for r in records
                ]
                problem = ""
            models.append(
                {"name": name, "versions": versions, "problem": problem, **counters[name]}
            )
        return {"time": time.time(), "poll_ms": POLL_MS, "models": models}


def _empty() -> dict[str, Any]:
    return {
        "requests_ok": 0.0,
        "requests_failed": 0.0,
        "latency_sum": 0.0,
        "latency_count": 0.0,
        "latency_buckets": {},
        "batch_rows_sum": 0.0,
        "batches": 0.0,
        "in_flight": 0.0,
    }


def _model_counters(metrics: Metrics) -> dict[str, dict[str, Any]]:
    """Per model: requests by outcome, the request-latency histogram (sum, count and
    cumulative buckets), batch rows and batches, requests in flight."""
    totals: dict[str, dict[str, Any]] = defaultdict(_empty)
    for family in metrics.registry.collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = totals[model]
            if sample.name == "ferry_requests_total":
                key = "requests_ok" if sample.labels.get("outcome") == "OK" else "requests_failed"
                entry[key] += sample.value
            elif sample.name == "ferry_request_latency_seconds_sum":
                entry["latency_sum"] += sample.value
            elif sample.name == "ferry_request_latency_seconds_count":
                entry["latency_count"] += sample.value
            elif sample.name == "ferry_request_latency_seconds_bucket":
                bound = sample.labels["le"]
                entry["latency_buckets"][bound] = (
                    entry["latency_buckets"].get(bound, 0.0) + sample.value
                )
            elif sample.name == "ferry_batch_size_rows_sum":
                entry["batch_rows_sum"] += sample.value
            elif sample.name == "ferry_batch_size_rows_count":
                entry["batches"] += sample.value
            elif sample.name == "ferry_requests_in_flight":
                entry["in_flight"] += sample.value
    return totals
