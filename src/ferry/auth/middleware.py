"""`ferry serve --auth FILE`: every request proves a key from the file, or is refused
before any protocol handler sees it.

HTTP (an ASGI wrapper around the whole app):
- `Authorization: AWS4-HMAC-SHA256 ...`: SigV4 for service `sagemaker` (`ferry.auth.sigv4`),
  what boto3's `sagemaker-runtime` client sends; works for every REST path too.
- `Authorization: Bearer <token>`: a token key, for curl, TF Serving / V2 REST clients
  and Prometheus.
- Open without credentials: `/v2/health/live`, `/v2/health/ready` and `/ping`
  (load balancers and SageMaker's health checks send none). Metrics are protected:
  they name models and traffic.
- Refused: 403, in the path's error form: under `/endpoints/` the runtime API's
  (`x-amzn-ErrorType` MissingAuthenticationToken, IncompleteSignature,
  UnrecognizedClientException or InvalidSignatureException, `{"message"}`), elsewhere
  TF Serving's and V2's `{"error": "..."}`.

gRPC (a grpc.aio server interceptor): metadata `authorization: Bearer <token>`; refused
calls end with UNAUTHENTICATED (the call carries no valid credentials). V2's ServerLive
and ServerReady and gRPC's standard Health/Check stay open, like the HTTP health paths.
gRPC does not take SigV4: no gRPC client signs with it.

Scopes: a valid key may still lack the scope its API needs (ferry.auth.keys): the admin
APIs (ferry.model_control's one list, `is_admin_http` and `ADMIN_GRPC_METHODS`) need
`admin`, every other API `infer`. Refused here, before any handler runs: HTTP 403 in
the path's form (AccessDeniedException under `/endpoints/`), gRPC PERMISSION_DENIED.
The admin APIs also need `--enable_model_control`, which their handlers check.

With `--dataplane rust` the front checks SigV4 signatures and bearer tokens on its own
threads (rust/src/auth): a request it finds valid arrives marked with the key id and the
key file's generation it was checked against (`VERIFIED_EXTENSION`), and only the scope
check runs here. The front accepts, never refuses: every request it cannot prove valid
is checked here as on the Python front, so every refusal keeps this module's words.

Secrets never reach the log: refusals are logged at debug level with the reason and
the key id at most, and counted in `ferry_auth_refused_total{api,reason}`. The time
spent checking is counted in `ferry_auth_check_seconds_total` and
`ferry_auth_checks_total`, so the per-request cost of `--auth` can be read off a
running server (seconds / checks) without a separate benchmark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import grpc
import orjson
from prometheus_client import CollectorRegistry, Counter

from ferry.auth.keys import ADMIN, INFER, KeySet, KeyStore
from ferry.distribution import install_hint
from ferry.errors import FerryError
from ferry.model_control import ADMIN_GRPC_METHODS, is_admin_http
from ferry.protocols.http_util import ClientDisconnected, Receive, Scope, Send, read_body

log = logging.getLogger(__name__)

OPEN_HTTP_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping"})
OPEN_GRPC_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        # gRPC's standard health check (--enable_grpc_healthcheck_service): probes such as
        # Kubernetes' grpc probe send no credentials.
        "/grpc.health.v1.Health/Check",
    }
)
RUNTIME_PREFIX = "/endpoints/"
# The scope extension the Rust front sets on a request whose credentials it verified:
# (key file generation, key id, seconds the check took). Only ferry.dataplane.front
# sets it; no header can.
VERIFIED_EXTENSION = "ferry.verified_credentials"
# What the Rust front is given to verify with (ferry._dataplane.HttpFront.set_keys).
SetKeys = Callable[[int, dict[str, str], dict[str, str], float], None]
_BEARER = "bearer "
_SIGV4 = "AWS4-HMAC-SHA256"


class AuthRefused(Exception):
    """A request without valid credentials; `error_type` names the reason (AWS's names
    for SigV4 failures, `InvalidToken` / `MissingAuthenticationToken` otherwise)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class AccessDenied(AuthRefused):
    """A valid key without the scope the API needs (HTTP 403, gRPC PERMISSION_DENIED)."""

    def __init__(self, needed: str) -> None:
        what = "the admin APIs (model control)" if needed == ADMIN else "this API"
        super().__init__(
            "AccessDeniedException",
            f"This key may not call {what}: it lacks the {needed!r} scope "
            f"(ferry keys create --scope {needed})",
        )


class AuthMetrics:
    """Counters of checks, their time and refusals, on the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "ferry_auth_checks", "Credential checks (--auth).", ["api"], registry=registry
        )
        self.seconds = Counter(
            "ferry_auth_check_seconds",
            "Time spent checking credentials (--auth), in seconds.",
            ["api"],
            registry=registry,
        )
        self.refused = Counter(
            "ferry_auth_refused",
            "Requests refused for missing or invalid credentials.",
            ["api", "reason"],
            registry=registry,
        )
        self.front_verified = Counter(
            "ferry_auth_front_verified",
            "Credential checks made by the Rust front (--dataplane rust) off the event loop.",
            registry=registry,
        )
        # Children resolved once: labels() costs a lock and a dict lookup per call.
        self._checks = {api: self.checks.labels(api) for api in ("http", "grpc")}
        self._seconds = {api: self.seconds.labels(api) for api in ("http", "grpc")}

    def observe(self, api: str, seconds: float) -> None:
        self._checks[api].inc()
        self._seconds[api].inc(seconds)


class Authenticator:
    """Checks credentials against a KeyStore; shared by the HTTP and gRPC layers."""

    def __init__(self, keys: KeyStore, metrics: AuthMetrics) -> None:
        self.keys = keys
        self.metrics = metrics
        try:  # botocore is an optional dependency (ferry-serve[aws]); bearer tokens need none
            from ferry.auth import sigv4
        except ImportError:
            log.warning(
                "--auth: botocore is not installed, so SigV4 requests are refused "
                f"({install_hint('aws')}); bearer tokens work"
            )
            sigv4 = None
        self._sigv4 = sigv4

    def publish_to(self, set_keys: SetKeys) -> None:
        """Give the Rust front the keys to verify with, now and on every change of the
        key file. SigV4 secrets only where this server checks SigV4 itself (botocore
        installed): the front must accept nothing this module would refuse."""

        def publish(keys: KeySet) -> None:
            if self._sigv4 is None:
                set_keys(keys.generation, {}, keys.token_ids, 0.0)
            else:
                set_keys(
                    keys.generation, keys.secrets, keys.token_ids, self._sigv4.MAX_SKEW_SECONDS
                )

        self.keys.subscribe(publish)

    def front_verified(self, scope: Scope) -> tuple[str, float] | None:
        """(key id, check seconds) of a request the Rust front verified against the keys
        in force now; None when it did not (or checked against keys since replaced)."""
        verified = scope.get("extensions", {}).get(VERIFIED_EXTENSION)
        if verified is None:
            return None
        generation, key_id, seconds = verified
        if generation != self.keys.current_generation():
            return None
        return key_id, seconds

    def check_bearer(self, value: str) -> str:
        """The key id of a `Bearer <token>` header value, or AuthRefused."""
        token = value[len(_BEARER) :].strip()
        key_id = self.keys.token_id(token) if token else None
        if key_id is None:
            raise AuthRefused("InvalidToken", "The bearer token is not valid.")
        return key_id

    def check_http(self, scope: Scope, authorization: str, body: bytes | None) -> str:
        """The key id behind an HTTP request's Authorization header, or AuthRefused."""
        if authorization[: len(_BEARER)].lower() == _BEARER:
            return self.check_bearer(authorization)
        if authorization.startswith(_SIGV4):
            assert body is not None
            if self._sigv4 is None:
                raise AuthRefused(
                    "IncompleteSignature", "SigV4 needs botocore on the server: use a token"
                )
            try:
                return self._sigv4.verify(
                    scope["method"],
                    scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
                    scope.get("query_string", b"").decode("latin-1"),
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                    body,
                    self.keys.secret_for,
                )
            except self._sigv4.SignatureError as exc:
                raise AuthRefused(exc.error_type, exc.message) from None
        raise AuthRefused(
            "IncompleteSignature",
            "Authorization must be AWS4-HMAC-SHA256 (SigV4) or Bearer <token>.",
        )

    def authorize(self, key_id: str, admin: bool) -> None:
        """AccessDenied unless the key has the scope: `admin` for an admin API, else
        `infer`."""
        needed = ADMIN if admin else INFER
        if needed not in self.keys.scopes_of(key_id):
            raise AccessDenied(needed)

    def refuse(self, api: str, error: AuthRefused, where: str) -> None:
        self.metrics.refused.labels(api, error.error_type).inc()
        log.debug("refused %s: %s", where, error.error_type)


class HttpAuth:
    """ASGI wrapper: authenticates every HTTP request except the open health paths,
    then hands it (body included, already read for SigV4) to the wrapped app."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        authenticator: Authenticator,
        max_request_bytes: int,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_HTTP_PATHS:
            await self.app(scope, receive, send)
            return
        verified = self.authenticator.front_verified(scope)
        if verified is not None:
            await self._pass_verified(scope, receive, send, *verified)
            return
        started = time.perf_counter()
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        body: bytes | None = None
        try:
            if not authorization:
                raise AuthRefused("MissingAuthenticationToken", "Missing Authentication Token")
            if authorization.startswith(_SIGV4):
                # SigV4 signs the body: read it here (with the server's size limit) and
                # hand the same bytes on.
                body = await read_body(scope, receive, self.max_request_bytes)
                # The handler would read the body anyway: only the check is auth's cost.
                started = time.perf_counter()
            key_id = self.authenticator.check_http(scope, authorization, body)
            self.authenticator.authorize(key_id, is_admin_http(scope["method"], scope["path"]))
        except AuthRefused as exc:
            self.authenticator.metrics.observe("http", time.perf_counter() - started)
            self.authenticator.refuse("http", exc, f"{scope['method']} {scope['path']}")
            await _send_refusal(send, scope["path"], exc)
            return
        except ClientDisconnected:
            return
        except FerryError as exc:  # the body is over --max_request_bytes
            refusal = AuthRefused("ValidationError", exc.message)
            await _send_refusal(send, scope["path"], refusal, 413)
            return
        self.authenticator.metrics.observe("http", time.perf_counter() - started)
        if body is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _pass_verified(
        self, scope: Scope, receive: Receive, send: Send, key_id: str, seconds: float
    ) -> None:
        """A request whose credentials the Rust front verified: the scope check only."""
        self.authenticator.metrics.front_verified.inc()
        try:
            self.authenticator.authorize(key_id, is_admin_http(scope["method"], scope["path"]))
        except AuthRefused as exc:
            self.authenticator.metrics.observe("http", seconds)
            self.authenticator.refuse("http", exc, f"{scope['method']} {scope['path']}")
            await _send_refusal(send, scope["path"], exc)
            return
        self.authenticator.metrics.observe("http", seconds)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields the already-read body, then defers to the server
    (so a later disconnect is still seen)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_refusal(send: Send, path: str, error: AuthRefused, status: int = 403) -> None:
    if path.startswith(RUNTIME_PREFIX):
        body = orjson.dumps({"message": error.message})
        headers = [(b"x-amzn-errortype", error.error_type.encode())]
    else:
        body = orjson.dumps({"error": error.message})
        headers = []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GrpcAuth(grpc.aio.ServerInterceptor):
    """Bearer tokens in the `authorization` metadata for every gRPC method but the open
    health methods; a refused call gets UNAUTHENTICATED (PERMISSION_DENIED for a key
    without the method's scope) and never reaches a servicer."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in OPEN_GRPC_METHODS:
            return await continuation(handler_call_details)
        started = time.perf_counter()
        value = ""
        for key, item in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                value = item if isinstance(item, str) else item.decode("latin-1")
                break
        try:
            if not value:
                raise AuthRefused(
                    "MissingAuthenticationToken",
                    "Missing credentials: send metadata authorization: Bearer <token>",
                )
            if value[: len(_BEARER)].lower() != _BEARER:
                raise AuthRefused(
                    "InvalidToken", "gRPC takes bearer tokens: authorization: Bearer <token>"
                )
            key_id = self.authenticator.check_bearer(value)
            self.authenticator.authorize(key_id, method in ADMIN_GRPC_METHODS)
        except AuthRefused as exc:
            self.authenticator.metrics.observe("grpc", time.perf_counter() - started)
            self.authenticator.refuse("grpc", exc, method)
            handler = await continuation(handler_call_details)
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if isinstance(exc, AccessDenied)
                else grpc.StatusCode.UNAUTHENTICATED
            )
            return _refusing_handler(handler, code, exc.message)
        self.authenticator.metrics.observe("grpc", time.perf_counter() - started)
        return await continuation(handler_call_details)


def _refusing_handler(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape as `handler` that ends the call with `code` without
    deserializing the request (unknown methods stay UNIMPLEMENTED)."""
    if handler is None:
        return None

    async def deny(request_or_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)
