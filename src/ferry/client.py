"""`ferry.Client`: call a TF Serving API (ferry's or TF Serving's own) with numpy arrays.

    client = Client("localhost:8501")          # REST (also "http://host:port")
    client = Client("grpc://localhost:8500")   # gRPC
    outputs = client.predict("mlp", x)         # {"probs": ndarray}

Both transports return the same thing: a dict of output name to array, with the
dtypes of the model's signature (which the client reads once per model, version and
signature, and caches). Inputs are cast to the signature's dtypes when numpy calls
that a same-kind cast (float64 -> float32), so plain `np.array([...])` works.

Only "come back later" answers are retried (HTTP 503, gRPC UNAVAILABLE: a full queue,
a server starting or stopping), with exponential backoff and jitter, a bounded number
of times; every other error is raised at once as the `ferry.errors` class of its code.
A Client is safe to share between threads (REST keeps one connection per thread).

Credentials and TLS, for a server started with `--auth` or behind TLS:

    Client("localhost:8501", token="...")                            # Authorization: Bearer
    Client("localhost:8501", aws_credentials=("FKIA...", "secret"))  # SigV4 (REST only)
    Client("https://host:8501", ca_file="ca.pem")                    # REST over TLS
    Client("grpc://host:8500", tls=True, ca_file="ca.pem", token="...")

gRPC takes bearer tokens only (as ferry's gRPC interceptor does); SigV4 signs each REST
attempt anew (retries included), as botocore signs, and needs botocore.
"""

from __future__ import annotations

import base64
import http.client
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import numpy as np
import orjson

from ferry.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FerryError,
    InternalError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StatusCode,
    Unavailable,
    Unimplemented,
)
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec, numpy_dtype

T = TypeVar("T")
Inputs = np.ndarray | Mapping[str, Any]

_ERROR_CLASSES: dict[StatusCode, type[FerryError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        FailedPrecondition,
        InternalError,
        ResourceExhausted,
    )
}
# TF Serving's HTTP statuses, read back into status codes (its http_server.cc mapping).
_CODE_BY_HTTP = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    409: StatusCode.ABORTED,
    413: StatusCode.RESOURCE_EXHAUSTED,
    429: StatusCode.RESOURCE_EXHAUSTED,
    499: StatusCode.CANCELLED,
    500: StatusCode.INTERNAL,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}


def server_error(code: StatusCode, message: str) -> FerryError:
    """The ferry.errors exception for a status code (a plain FerryError carrying the code
    when ferry has no class for it)."""
    cls = _ERROR_CLASSES.get(code)
    if cls is not None:
        return cls(message)
    error = FerryError(message)
    error.code = code
    return error


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE answers: attempt n (from 1) waits
    `min(max_backoff, initial_backoff * multiplier**(n-1))`, scaled by a random factor in
    [1 - jitter, 1], so that clients turned away together do not return together."""

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * random.random())

    def call(self, operation: Callable[[], T], deadline: float | None = None) -> T:
        """Run `operation`, retrying UNAVAILABLE answers; never waits past `deadline` (a
        `time.monotonic()` value): when the next wait would end after it, the last
        UNAVAILABLE is raised instead."""
        attempt = 1
        while True:
            try:
                return operation()
            except Unavailable:
                if attempt >= self.max_attempts:
                    raise
                pause = self.delay(attempt)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
                attempt += 1


@dataclass(frozen=True)
class VersionStatus:
    """One version's state, as the status APIs report it (`AVAILABLE`, `END`, ...)."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """The version that answered and its signatures (numpy dtypes, -1 for any size)."""

    name: str
    version: int
    signatures: dict[str, Signature]


@dataclass(frozen=True)
class _Credentials:
    """What every request carries: a bearer token, or SigV4 keys (at most one)."""

    token: str | None = None
    aws_credentials: tuple[str, str] | None = None
    aws_region: str = "us-east-1"


class Client:
    """A TF Serving client for numpy users; `target` is `host:port`, `http://host:port`,
    `https://host:port` or `grpc://host:port`. `timeout` (seconds) bounds each call,
    retries included.

    `token`: a bearer token (`ferry keys create --kind token`), sent on REST and gRPC.
    `aws_credentials`: (access key id, secret) of a SigV4 key, REST only; `aws_region`
    is the region it signs for (ferry accepts any). `tls`: gRPC over TLS (REST uses TLS
    when the target is `https://`); `ca_file`: the PEM file of the CA that signed the
    server's certificate (default: the system's CAs). Raises ValueError for options
    that do not go together."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        aws_credentials: tuple[str, str] | None = None,
        aws_region: str = "us-east-1",
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        if token is not None and aws_credentials is not None:
            raise ValueError("pass a bearer token or SigV4 credentials, not both")
        credentials = _Credentials(token, aws_credentials, aws_region)
        if target.startswith("grpc://"):
            if aws_credentials is not None:
                raise ValueError("ferry's gRPC API takes bearer tokens (token=), not SigV4")
            self._transport: _Transport = _GrpcTransport(
                target.removeprefix("grpc://"), credentials, tls, ca_file
            )
        else:
            url = target if "://" in target else f"{'https' if tls else 'http'}://{target}"
            if tls and not url.startswith("https://"):
                raise ValueError(f"tls=True with a plain http target: use https:// ({target})")
            self._transport = _RestTransport(url, credentials, ca_file)
        self._signatures: dict[tuple, Signature] = {}
        self._lock = threading.Lock()

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        """Run the model; a bare array is the signature's only input."""
        deadline = self._deadline()
        signature = self._signature(model, version, label, signature_name, deadline)
        arrays = _named_inputs(inputs, signature)
        return self.retry.call(
            lambda: self._transport.predict(
                model, version, label, signature_name, arrays, signature, deadline
            ),
            deadline,
        )

    def status(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Every version's state, newest first (or the one asked for)."""
        deadline = self._deadline()
        return self.retry.call(
            lambda: self._transport.status(model, version, label, deadline), deadline
        )

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> ModelMetadata:
        """The signatures of the version that would answer a predict call."""
        return self._metadata(model, version, label, self._deadline())

    def _metadata(
        self, model: str, version: int | None, label: str | None, deadline: float
    ) -> ModelMetadata:
        return self.retry.call(
            lambda: self._transport.metadata(model, version, label, deadline), deadline
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deadline(self) -> float:
        """When the call that starts now must end: computed once per call, so retries
        (and the metadata lookup before a first predict) share the one `timeout`."""
        return time.monotonic() + self.timeout

    def _signature(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        deadline: float,
    ) -> Signature:
        key = (model, version, label, signature_name)
        with self._lock:
            cached = self._signatures.get(key)
        if cached is not None:
            return cached
        signatures = self._metadata(model, version, label, deadline).signatures
        if signature_name not in signatures:
            raise InvalidArgument(
                f'Serving signature name: "{signature_name}" not found in signature def'
            )
        with self._lock:
            self._signatures[key] = signatures[signature_name]
        return signatures[signature_name]


def _named_inputs(inputs: Inputs, signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        if len(signature.inputs) != 1:
            raise InvalidArgument(
                f"The model has inputs {sorted(signature.inputs)}: pass a dict of arrays"
            )
        inputs = {next(iter(signature.inputs)): inputs}
    named = {}
    for name, value in inputs.items():
        spec = signature.inputs.get(name)
        array = np.asarray(value, dtype=object if spec and spec.dtype == STRING_DTYPE else None)
        if (
            spec is not None
            and spec.dtype != STRING_DTYPE
            and array.dtype != spec.dtype
            and np.can_cast(array.dtype, spec.dtype, "same_kind")
        ):
            array = array.astype(spec.dtype)
        named[name] = array
    return named


class _Transport:
    def predict(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        signature: Signature,
        deadline: float,
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def status(
        self, model: str, version: int | None, label: str | None, deadline: float
    ) -> list[VersionStatus]:
        raise NotImplementedError

    def metadata(
        self, model: str, version: int | None, label: str | None, deadline: float
    ) -> ModelMetadata:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the client's timeout passed")
    return left


# -- REST ------------------------------------------------------------------------------


class _RestTransport(_Transport):
    """TF Serving's REST API over one keep-alive connection per thread."""

    def __init__(
        self,
        url: str,
        credentials: _Credentials | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) or grpc:// target: {url}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._credentials = credentials or _Credentials()
        if ca_file is not None and not self._https:
            raise ValueError(f"ca_file is for TLS: use an https:// target ({url})")
        # Read now, so a missing CA file fails at construction, not at the first call.
        self._ssl = ssl.create_default_context(cafile=ca_file) if self._https else None
        # How the Host header reads (http.client omits the scheme's default port), which
        # SigV4 signs.
        default_port = 443 if self._https else 80
        self._origin = f"{parts.scheme}://{self._host}" + (
            "" if self._port == default_port else f":{self._port}"
        )

    def _auth_headers(self, method: str, path: str, body: bytes | None, headers: dict) -> dict:
        """`headers` with the credentials added (signed over the final headers)."""
        credentials = self._credentials
        if credentials.token is not None:
            return {**headers, "Authorization": f"Bearer {credentials.token}"}
        if credentials.aws_credentials is not None:
            from ferry.auth.sigv4 import sign_headers  # needs botocore

            key_id, secret = credentials.aws_credentials
            return sign_headers(
                method,
                self._origin + path,
                body or b"",
                key_id,
                secret,
                credentials.aws_region,
                headers,
            )
        return headers

    def _path(self, model: str, version: int | None, label: str | None) -> str:
        path = f"{self._prefix}/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def _request(self, method: str, path: str, body: bytes | None, deadline: float) -> Any:
        timeout = _remaining(deadline)
        for fresh in (False, True):
            connection = self._connection(timeout, fresh)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                headers = self._auth_headers(method, path, body, headers)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed meanwhile: reconnect once.
                connection.close()
                if fresh:
                    raise
            except TimeoutError:
                connection.close()
                raise DeadlineExceeded(f"no answer to {method} {path} in time") from None
        if response.status != 200:
            try:
                message = orjson.loads(data)["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = data.decode(errors="replace")
            code = _CODE_BY_HTTP.get(response.status, StatusCode.UNKNOWN)
            raise server_error(code, message)
        return orjson.loads(data)

    def _connection(self, timeout: float, fresh: bool) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None or fresh:
            if self._https:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._ssl
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.connection = connection
            self._connections.append(connection)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    def predict(self, model, version, label, signature_name, inputs, signature, deadline):
        body = {
            "signature_name": signature_name,
            "inputs": {name: _json_value(array) for name, array in inputs.items()},
        }
        option = orjson.OPT_SERIALIZE_NUMPY
        answer = self._request(
            "POST",
            self._path(model, version, label) + ":predict",
            orjson.dumps(body, option=option),
            deadline,
        )["outputs"]
        if len(signature.outputs) == 1 and not (
            isinstance(answer, dict) and answer.keys() == signature.outputs.keys()
        ):
            answer = {next(iter(signature.outputs)): answer}
        return {
            name: _from_json(name, value, signature.outputs.get(name))
            for name, value in answer.items()
        }

    def status(self, model, version, label, deadline):
        body = self._request("GET", self._path(model, version, label), None, deadline)
        return [
            VersionStatus(
                int(entry["version"]),
                entry["state"],
                entry["status"]["error_code"],
                entry["status"]["error_message"],
            )
            for entry in body["model_version_status"]
        ]

    def metadata(self, model, version, label, deadline):
        path = self._path(model, version, label) + "/metadata"
        body = self._request("GET", path, None, deadline)
        defs = body["metadata"]["signature_def"]["signature_def"]
        signatures = {
            name: Signature(
                inputs={k: _spec_from_json(k, v) for k, v in sig["inputs"].items()},
                outputs={k: _spec_from_json(k, v) for k, v in sig["outputs"].items()},
                method_name=sig.get("method_name", ""),
            )
            for name, sig in defs.items()
        }
        return ModelMetadata(
            body["model_spec"]["name"], int(body["model_spec"]["version"]), signatures
        )


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == STRING_DTYPE or array.dtype.kind in "SU":
        return _b64_leaves(array.tolist())
    return np.ascontiguousarray(array) if array.dtype != np.float16 else array.tolist()


def _b64_leaves(value: Any) -> Any:
    if isinstance(value, list):
        return [_b64_leaves(item) for item in value]
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return {"b64": base64.b64encode(raw).decode("ascii")}


def _from_json(name: str, value: Any, spec: TensorSpec | None) -> np.ndarray:
    if spec is not None and spec.dtype == STRING_DTYPE:
        array = np.array(value, dtype=object)
        flat = array.reshape(-1)
        for index, item in enumerate(flat):
            flat[index] = (
                base64.b64decode(item["b64"]) if isinstance(item, dict) else str(item).encode()
            )
        return array
    return np.asarray(value, dtype=spec.dtype if spec is not None else None)


def _spec_from_json(name: str, info: dict) -> TensorSpec:
    shape_info = info.get("tensor_shape", {})
    shape = (
        None
        if shape_info.get("unknown_rank")
        else tuple(int(d["size"]) for d in shape_info.get("dim", []))
    )
    return TensorSpec(info.get("name", name), numpy_dtype(info["dtype"]), shape)


# -- gRPC ------------------------------------------------------------------------------


class _GrpcTransport(_Transport):
    """TF Serving's gRPC API with ferry's message classes (no TensorFlow needed)."""

    def __init__(
        self,
        target: str,
        credentials: _Credentials | None = None,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        import grpc

        from ferry.protos import message_class

        self._grpc = grpc
        self._message = lambda name: message_class(f"tensorflow.serving.{name}")
        options = [("grpc.max_receive_message_length", -1)]
        if ca_file is not None and not tls:
            raise ValueError("ca_file is for TLS: pass tls=True too")
        if tls:
            roots = Path(ca_file).read_bytes() if ca_file is not None else None
            self._channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=roots), options=options
            )
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        token = (credentials or _Credentials()).token
        # ferry's gRPC interceptor reads `authorization: Bearer <token>` metadata.
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._methods: dict[str, Callable] = {}

    def _rpc(self, service: str, method: str, response_type: str, request, deadline: float):
        rpc = self._methods.get(method)
        if rpc is None:
            rpc = self._methods[method] = self._channel.unary_unary(
                f"/tensorflow.serving.{service}/{method}",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=self._message(response_type).FromString,
            )
        try:
            return rpc(request, timeout=_remaining(deadline), metadata=self._metadata)
        except self._grpc.RpcError as exc:
            code = StatusCode(exc.code().value[0])
            raise server_error(code, exc.details() or code.name) from None

    def _spec(self, message, model: str, version: int | None, label: str | None) -> None:
        message.name = model
        if version is not None:
            message.version.value = version
        elif label is not None:
            message.version_label = label

    def predict(self, model, version, label, signature_name, inputs, signature, deadline):
        from ferry.codecs.tensor_proto import decode_tensor, encode_tensor

        request = self._message("PredictRequest")()
        self._spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = signature_name
        for name, array in inputs.items():
            # What tf.make_tensor_proto sends: numbers as tensor_content (no work per
            # value), strings in string_val (which every TF Serving version reads).
            is_number = np.asarray(array).dtype.kind not in "OSU"
            encode_tensor(array, name, into=request.inputs[name], tensor_content=is_number)
        response = self._rpc("PredictionService", "Predict", "PredictResponse", request, deadline)
        # Outputs come in the typed *_val fields (TF Serving's default) or in tensor_content
        # (--enable_serialization_as_tensor_content): decode_tensor reads both.
        return {name: decode_tensor(proto, name) for name, proto in response.outputs.items()}

    def status(self, model, version, label, deadline):
        request = self._message("GetModelStatusRequest")()
        self._spec(request.model_spec, model, version, label)
        response = self._rpc(
            "ModelService", "GetModelStatus", "GetModelStatusResponse", request, deadline
        )
        states = request.DESCRIPTOR.file.pool.FindEnumTypeByName(
            "tensorflow.serving.ModelVersionStatus.State"
        )
        return [
            VersionStatus(
                entry.version,
                states.values_by_number[entry.state].name,
                StatusCode(entry.status.error_code).name,
                entry.status.error_message,
            )
            for entry in response.model_version_status
        ]

    def metadata(self, model, version, label, deadline):
        from ferry.codecs.tensor_proto import numpy_dtype_of

        request = self._message("GetModelMetadataRequest")()
        self._spec(request.model_spec, model, version, label)
        request.metadata_field.append("signature_def")
        response = self._rpc(
            "PredictionService", "GetModelMetadata", "GetModelMetadataResponse", request, deadline
        )
        defs = self._message("SignatureDefMap")()
        response.metadata["signature_def"].Unpack(defs)

        def spec(name: str, info) -> TensorSpec:
            shape = info.tensor_shape
            dims = None if shape.unknown_rank else tuple(d.size for d in shape.dim)
            return TensorSpec(info.name or name, numpy_dtype_of(info.dtype, name), dims)

        signatures = {
            name: Signature(
                inputs={k: spec(k, v) for k, v in sig.inputs.items()},
                outputs={k: spec(k, v) for k, v in sig.outputs.items()},
                method_name=sig.method_name,
            )
            for name, sig in defs.signature_def.items()
        }
        return ModelMetadata(
            response.model_spec.name, response.model_spec.version.value, signatures
        )

    def close(self) -> None:
        self._channel.close()
