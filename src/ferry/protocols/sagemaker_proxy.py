"""The SageMaker TensorFlow Serving container's `/tfs/` path: its nginx forwards
`/tfs/{rest}` to TF Serving's REST API as `/{rest}` (`location /tfs` in
nginx.conf.template), so `POST /tfs/v1/models/NAME:predict` and
`GET /tfs/v1/models/NAME/metadata` reach TF Serving from outside the container.

ferry serves TF Serving's REST API on the same port, so the proxy is a path rewrite in
front of the HTTP app: `/tfs/v1/...` becomes `/v1/...`, answered by
`ferry.protocols.tfserving_rest` with its limits, errors and (under `--auth`) the same
authentication as every other path. Only `/tfs/v1/` is rewritten: TF Serving behind the
container answers nothing else that ferry serves (its V2 and runtime APIs are ferry's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ferry.protocols.http_util import Receive, Scope, Send

TFS_PROXY_PREFIX = "/tfs"
_FORWARDED = "/tfs/v1/"

HttpHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


class TfsProxyPath:
    """ASGI app: `/tfs/v1/...` to `app` as `/v1/...`; every other request unchanged."""

    def __init__(self, app: HttpHandler) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"][: len(_FORWARDED)].lower() == _FORWARDED:
            scope = forwarded_scope(scope)
        await self._app(scope, receive, send)


def forwarded_scope(scope: Scope) -> Scope:
    """The request as nginx passes it on: the same, its path without `/tfs`."""
    path = scope["path"][len(TFS_PROXY_PREFIX) :]
    raw_path = scope.get("raw_path")
    forwarded = {**scope, "path": path}
    if raw_path is not None:
        forwarded["raw_path"] = raw_path[len(TFS_PROXY_PREFIX) :]
    return forwarded
