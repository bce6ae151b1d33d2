"""Minimal predict apps used to compare HTTP server stacks for ferry.

Every app runs the same handler (:func:`predict`) so that the only variable
between benchmark configurations is the server / framework layer:

* ``raw_asgi``   - plain ASGI callable, no framework (uvicorn / granian);
* ``starlette_app`` - the same handler behind a Starlette ``Route`` using the
  path pattern ferry uses (``/v1/models/{rest:path}``);
* ``raw_rsgi``   - granian's native RSGI interface, no framework.

The handler mimics ferry's hot path: orjson-decode a TF-Serving ``instances``
body, build a float32 ``[batch, 784]`` array, run a tiny fixed matmul and
orjson-encode ``{"predictions": ...}`` straight from numpy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

N_FEATURES = 784
N_OUTPUTS = 10
PREDICT_PATH = "/v1/models/bench:predict"

# Fixed weights so every server computes exactly the same thing.
WEIGHTS: np.ndarray = np.random.default_rng(0).standard_normal(
    (N_FEATURES, N_OUTPUTS), dtype=np.float32
) / np.float32(N_FEATURES)

_JSON_CT = "application/json"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BadRequest(ValueError):
    """Raised when the request body is not a valid ``instances`` payload."""


def predict(body: bytes) -> bytes:
    """Decode ``{"instances": [[784 floats]]}``, run the matmul, encode predictions."""
    try:
        payload = orjson.loads(body)
        batch = np.asarray(payload["instances"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from exc
    if batch.ndim != 2 or batch.shape[1] != N_FEATURES:
        raise BadRequest(f"expected shape [batch, {N_FEATURES}], got {list(batch.shape)}")
    return orjson.dumps({"predictions": batch @ WEIGHTS}, option=orjson.OPT_SERIALIZE_NUMPY)


def _error_body(message: str) -> bytes:
    """TF-Serving style error payload."""
    return orjson.dumps({"error": message})


# --------------------------------------------------------------------------- ASGI


async def _read_asgi_body(receive: Receive) -> bytes:
    """Collect the full request body (it may arrive in several chunks)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge lifespan events so servers do not log warnings."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """Framework-free ASGI app: the lower bound of per-request Python overhead."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    status = 200
    if scope["method"] != "POST" or not scope["path"].startswith("/v1/models/"):
        status, body = 404, _error_body("not found")
    else:
        try:
            body = predict(await _read_asgi_body(receive))
        except BadRequest as exc:
            status, body = 400, _error_body(str(exc))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", _JSON_CT.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- Starlette


async def _starlette_predict(request: Request) -> Response:
    """Starlette endpoint wrapping the shared handler."""
    try:
        body = predict(await request.body())
    except BadRequest as exc:
        return Response(_error_body(str(exc)), status_code=400, media_type=_JSON_CT)
    return Response(body, media_type=_JSON_CT)


starlette_app = Starlette(
    routes=[Route("/v1/models/{rest:path}", _starlette_predict, methods=["POST"])]
)


# ---------------------------------------------------------------------------- RSGI


async def raw_rsgi(scope: Any, protocol: Any) -> None:
    """Granian-native RSGI app: skips the ASGI message-dict translation layer."""
    if scope.proto != "http":
        return
    status = 200
    if scope.method != "POST" or not scope.path.startswith("/v1/models/"):
        status, body = 404, _error_body("not found")
    else:
        try:
            body = predict(await protocol())
        except BadRequest as exc:
            status, body = 400, _error_body(str(exc))
    protocol.response_bytes(status, [("content-type", _JSON_CT)], body)
