"""Liveness and readiness for load balancers and orchestrators (KServe V2 paths).

`/v2/health/live` answers 200 while the process runs. `/v2/health/ready` answers
200 once the first scan of the model repository has been loaded and until
shutdown starts, 503 otherwise, so a rolling update sends no traffic to a server
that is still loading or already draining.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def health_routes(is_ready: Callable[[], bool]) -> list[Route]:
    async def live(request: Request) -> Response:
        return Response(b"", status_code=200)

    async def ready(request: Request) -> Response:
        return Response(b"", status_code=200 if is_ready() else 503)

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
    ]
