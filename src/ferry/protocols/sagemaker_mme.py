"""SageMaker multi-model endpoints: the MME API of the SageMaker TensorFlow Serving
container, and `TargetModel` on `/invocations` and the runtime API.

`ferry serve --sagemaker` with SAGEMAKER_MULTI_MODEL=true (or `--multi_model`) starts
with no model loaded and serves (statuses and bodies as the container's
python_service.py answers them):

  GET    /ping                    200 once the server is up (no model needs to be loaded)
  GET    /models                  200 {NAME: TF Serving model status, ...} of loaded models
  POST   /models                  {"model_name": NAME, "url": FOLDER}: load NAME from FOLDER
                                  200 {"success": "Successfully loaded model NAME."};
                                  409 already loaded; 404 "Could not find valid base path
                                  ..." when FOLDER has no version folders; 507 no room (see
                                  `ferry.repository.mme_cache`); 500 a malformed request
                                  (as in the container) or a failed load
  GET    /models/NAME             200 {"model": TF Serving model status}; 404 not loaded
  DELETE /models/NAME             200 {"success": "Successfully unloaded model NAME."}; 404
  POST   /models/NAME/invoke      an /invocations request for NAME; 404 "Model NAME is not
                                  loaded yet." (the container's words)
  POST   /invocations             with `X-Amzn-SageMaker-Target-Model: PATH`: PATH (an
                                  archive such as `m1.tar.gz`, or a folder) under
                                  `--sagemaker_model_data_url` (s3://bucket/prefix or a
                                  local folder; SageMaker's ModelDataUrl) is fetched,
                                  unpacked and loaded on first use, then invoked; 400
                                  without the header, as the container

A FOLDER must lie under the multi-model folder (`--sagemaker_multi_model_dir`,
/opt/ml/models) or `--model_roots`: the load API reads files, so it reads only where the
operator said (403 otherwise). Loading and unloading are admin APIs: with `--auth` they
need a key with the `admin` scope (`ferry.model_control.is_admin_http`); in
multi-model mode they are on without `--enable_model_control`, because the SageMaker
platform drives them (the mode is the operator's choice). A loaded model is trusted
with no code: its model.py / pickles never run, as for any network-configured model.

Invocations read the payload exactly as /invocations does (`ferry.protocols.sagemaker`,
`code/inference.py` included: `/opt/ml/models/code/`); errors are TF Serving's statuses
(the container answers 200 with TF Serving's error body on this path, a bug ferry does
not copy).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.errors import FerryError, NotFound, PermissionDenied, StorageError
from ferry.model_config import ModelSpec
from ferry.model_control import ModelControl
from ferry.protocols.http_util import Receive, Scope, Send, answer_post, header, read_body
from ferry.protocols.rest_answers import version_status
from ferry.protocols.sagemaker import PING_PATH, SageMakerInvocations, container_error_parts
from ferry.repository.location import BasePath, ObjectStoreOptions, S3Url
from ferry.repository.mme_cache import (
    AlreadyLoaded,
    CacheLimits,
    InvalidModelFolder,
    LoadedModelCache,
    LoadFailed,
    MemoryExhausted,
    NotLoaded,
)
from ferry.repository.sagemaker_catalog import (
    DEFAULT_MULTI_MODEL_DIR,
    MULTI_MODEL_ENV,
    single_model_folder,
)

log = logging.getLogger(__name__)

MODELS_PATH = "/models"
MODELS_PREFIX = "/models/"
TARGET_MODEL = b"x-amzn-sagemaker-target-model"
_INVOKE_PATH = re.compile(r"/models/(?P<name>[^/]+)/invoke")
# A target evicted between its load and its use (under memory pressure) is loaded again,
# this many times at most.
_TARGET_ATTEMPTS = 3
_JSON = b"application/json"


@dataclass(frozen=True)
class MultiModelOptions:
    """`--multi_model` settings."""

    model_dir: Path = DEFAULT_MULTI_MODEL_DIR
    # Where TargetModel paths are found (SageMaker's ModelDataUrl); None: no TargetModel.
    model_data_url: BasePath | None = None
    limits: CacheLimits = field(default_factory=CacheLimits)
    # Further folders a POST /models url may lie under (`--model_roots`).
    extra_roots: tuple[BasePath, ...] = ()


class TargetModelNotFound(NotFound):
    """No archive or folder at the TargetModel's path (the runtime API's ValidationError)."""


class _MalformedLoad(FerryError):
    """A POST /models body that is not {"model_name", "url"} (HTTP 500, as the container)."""


def multi_model_enabled(value: str) -> bool:
    """SAGEMAKER_MULTI_MODEL, validated as the container validates it."""
    lowered = value.strip().lower()
    if lowered not in ("", "true", "false"):
        raise ValueError(f"{MULTI_MODEL_ENV} must be 'true' or 'false', not {value!r}")
    return lowered == "true"


def served_name(target: str) -> str:
    """The model name a TargetModel path is served under: the path without `.tar.gz`,
    made safe for TF Serving's URLs; a hash tells apart paths that differ only in the
    characters replaced (`a/m.tar.gz` and `a_m.tar.gz`)."""
    stem = target.removesuffix(".tar.gz")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".") or "model"
    if safe == stem:
        return safe
    return f"{safe}-{hashlib.sha256(target.encode()).hexdigest()[:8]}"


class MultiModelEndpoint:
    """The MME API and TargetModel invocations over one LoadedModelCache."""

    def __init__(
        self,
        cache: LoadedModelCache,
        invocations: SageMakerInvocations,
        options: MultiModelOptions,
        object_store: ObjectStoreOptions,
        server_ready: Callable[[], bool],
    ) -> None:
        self.cache = cache
        self.invocations = invocations
        self.options = options
        self.object_store = object_store
        self._server_ready = server_ready
        # Where a POST /models url may point (resolved once; see ferry.model_control).
        self._load_roots = ModelControl(True, (options.model_dir, *options.extra_roots))

    def routes(self) -> list[Route]:
        return [
            Route(PING_PATH, self.ping, methods=["GET"]),
            Route(MODELS_PATH, self.list_models, methods=["GET"]),
            Route(MODELS_PATH, self.load_model, methods=["POST"]),
            Route(MODELS_PATH + "/{model_name}", self.get_model, methods=["GET"]),
            Route(MODELS_PATH + "/{model_name}", self.unload_model, methods=["DELETE"]),
        ]

    # -- the MME API --------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        return Response(b"", status_code=200 if self._server_ready() else 503)

    async def list_models(self, request: Request) -> Response:
        return _json(200, {name: self._status(name) for name in self.cache.loaded_names()})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        if not self.cache.is_loaded(name):
            return _json(404, {"error": f"Model {name} is not loaded yet."})
        return _json(200, {"model": self._status(name)})

    async def load_model(self, request: Request) -> Response:
        try:
            limit = self.invocations.limits.max_request_bytes  # --max_request_bytes
            raw = await read_body(request.scope, request.receive, limit)
            name, url = _load_request(raw)
            folder = self._allowed_folder(name, url)
            await asyncio.to_thread(self.cache.load, name, folder)
        except FerryError as exc:
            return _error_response(exc)
        return _json(200, {"success": f"Successfully loaded model {name}."})

    async def unload_model(self, request: Request) -> Response:
        name = request.path_params["model_name"]
        try:
            await asyncio.to_thread(self.cache.unload, name)
        except NotLoaded as exc:
            return _json(404, {"error": exc.message})
        return _json(200, {"success": f"Successfully unloaded model {name}."})

    async def handle_invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST under /models/ (a fast-path prefix): only /models/NAME/invoke exists."""
        await answer_post(scope, send, self._invoke_named(scope, receive), mme_error_parts)

    async def _invoke_named(self, scope: Scope, receive: Receive):
        path = scope["path"]
        match = _INVOKE_PATH.fullmatch(unquote(path) if "%" in path else path)
        if match is None:
            raise NotFound("Not Found")
        name = match["name"]
        with self.cache.use(name):
            body, content_type = await self.invocations.invoke(scope, receive, "sagemaker", name)
        return body, content_type, []

    # -- TargetModel ----------------------------------------------------------------------

    async def handle_invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /invocations on a multi-model endpoint: the TargetModel header names the
        model (other paths under the prefix get 404, as on a single-model endpoint)."""
        await answer_post(scope, send, self._invoke_invocations(scope, receive), mme_error_parts)

    async def _invoke_invocations(self, scope: Scope, receive: Receive):
        if scope["path"] != "/invocations":
            raise NotFound("Not Found")
        target = header(scope, TARGET_MODEL)
        if not target:
            raise _NoModelName("Invocation request does not contain model name.")
        body, content_type = await self.invoke_target(
            scope, receive, target.decode("latin-1"), "sagemaker"
        )
        return body, content_type, []

    async def invoke_target(
        self, scope: Scope, receive: Receive, target: str, api: str
    ) -> tuple[bytes, bytes]:
        """Invoke the model at TargetModel path `target`, loading it first if needed.
        Raises TargetModelNotFound, MemoryExhausted, LoadFailed and what invoke raises."""
        name = served_name(target)
        for _ in range(_TARGET_ATTEMPTS):
            try:
                with self.cache.use(name):
                    return await self.invocations.invoke(scope, receive, api, name)
            except NotLoaded:
                pass
            await asyncio.to_thread(
                self.cache.ensure_loaded, name, lambda: self._fetch_target(target, name)
            )
        raise MemoryExhausted(
            f"Memory exhausted: model {target} was evicted again before it could be used"
        )

    def _fetch_target(self, target: str, name: str) -> Path:
        """A local folder with the target's model: unpacked from its archive (downloaded
        from S3 first) into ferry's cache, or the target folder itself."""
        base = self.options.model_data_url
        relative = _safe_target(target)
        if base is None:
            raise TargetModelNotFound(
                f"Target model {target} not found: this endpoint has no model data URL "
                "(ferry serve --sagemaker_model_data_url)"
            )
        cache = self.object_store.resolved_cache_dir() / "sagemaker-multi-model"
        if isinstance(base, S3Url):
            archive = self._download(base / relative.as_posix(), cache, target)
        else:
            archive = base / relative
            if archive.is_dir():
                return _model_folder(archive, target)
            if not archive.is_file():
                raise TargetModelNotFound(f"Target model {target} not found under {base}")
        return _unpacked(archive, cache / f"{name}-{_file_tag(archive)}", target)

    def _download(self, url: S3Url, cache: Path, target: str) -> Path:
        import botocore.exceptions

        from ferry.deploy.object_store import s3_client, storage_error
        from ferry.deploy.size_limits import free_room, human

        client = s3_client(self.object_store.endpoint_url)
        cache.mkdir(parents=True, exist_ok=True)
        key = url.key_prefix.rstrip("/")
        staging = ""
        try:
            # Sized before anything is written: the archive must fit the free disk.
            size = int(client.head_object(Bucket=url.bucket, Key=key)["ContentLength"])
            if size > free_room(cache):
                raise MemoryExhausted(
                    f"Memory exhausted: no disk room for {url} ({human(size)}) in {cache}"
                )
            fd, staging = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=cache)
            with open(fd, "wb") as file:
                client.download_fileobj(url.bucket, key, file)
        except Exception as exc:
            if staging:
                Path(staging).unlink(missing_ok=True)
            if not isinstance(
                exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError
            ):
                raise
            error = storage_error(exc, f"cannot download {url}")
            if isinstance(error, StorageError) and error.code.name == "NOT_FOUND":
                raise TargetModelNotFound(f"Target model {target} not found at {url}") from None
            raise error from None
        return Path(staging)

    # -- helpers --------------------------------------------------------------------------

    def _allowed_folder(self, name: str, url: str) -> Path:
        spec = ModelSpec(name=name, base_path=Path(url), trusted=False)
        try:
            allowed = self._load_roots.allowed_specs([spec])[0].base_path
        except PermissionDenied as exc:
            raise PermissionDenied(
                f"Could not load {name} from {url}: {exc.message} or "
                f"--sagemaker_multi_model_dir ({self.options.model_dir})"
            ) from None
        assert isinstance(allowed, Path)
        folder = single_model_folder(allowed)
        if folder is None:
            raise InvalidModelFolder(f"Could not find valid base path {url} for servable {name}")
        return folder

    def _status(self, name: str) -> dict:
        try:
            records = self.cache.manager.version_status(name)
        except NotFound:
            records = []
        return {"model_version_status": [version_status(r) for r in records]}


class _NoModelName(FerryError):
    """POST /invocations on a multi-model endpoint without TargetModel (HTTP 400)."""


def _load_request(raw: bytes) -> tuple[str, str]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _MalformedLoad(f"Invalid load request: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _MalformedLoad('Invalid load request: expected {"model_name": ..., "url": ...}')
    name, url = data.get("model_name"), data.get("url")
    for key, value in (("model_name", name), ("url", url)):
        if not isinstance(value, str) or not value:
            raise _MalformedLoad(f"Invalid load request: {key!r} must be a non-empty string")
    if "/" in name or name in (".", ".."):
        raise _MalformedLoad(f"Invalid load request: not a usable model name: {name!r}")
    return name, url


def _safe_target(target: str) -> Path:
    from ferry.deploy.object_store import safe_relative_path

    relative = safe_relative_path(target.lstrip("/"))
    if relative is None:
        raise TargetModelNotFound(f"Target model {target} is not a valid relative path")
    return relative


def _file_tag(archive: Path) -> str:
    """Names the unpacked folder by the archive's content, so a changed archive loads
    fresh and an unchanged one is unpacked once."""
    digest = hashlib.sha256()
    with open(archive, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _unpacked(archive: Path, dest: Path, target: str) -> Path:
    """`archive` unpacked into `dest` (once: a complete `dest` is reused); a downloaded
    archive (in the cache folder) is removed afterwards."""
    from ferry.deploy.package import PackageError, unpack

    downloaded = archive.name.startswith(".download-")
    try:
        if not dest.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=dest.parent))
            try:
                unpack(archive, staging)
            except PackageError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise LoadFailed(f"Target model {target}: {exc}") from None
            try:
                staging.rename(dest)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # another load unpacked it first
                if not dest.is_dir():
                    raise
    finally:
        if downloaded:
            archive.unlink(missing_ok=True)
    return _model_folder(dest, target)


def _model_folder(folder: Path, target: str) -> Path:
    found = single_model_folder(folder)
    if found is None:
        raise InvalidModelFolder(
            f"Target model {target} holds no model: expected VERSION/... or NAME/VERSION/..."
        )
    return found


def mme_error_parts(error: FerryError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """HTTP status, body and headers of a failed MME request, as the container answers."""
    status = _STATUS.get(type(error))
    if status is None:
        if isinstance(error, TargetModelNotFound):
            status = 404
        else:
            return container_error_parts(error)
    return status, orjson.dumps({"error": error.message}), []


_STATUS: dict[type, int] = {
    AlreadyLoaded: 409,
    NotLoaded: 404,
    InvalidModelFolder: 404,
    MemoryExhausted: 507,
    LoadFailed: 500,
    _MalformedLoad: 500,
    _NoModelName: 400,
    PermissionDenied: 403,
}


def _error_response(error: FerryError) -> Response:
    status, body, _ = mme_error_parts(error)
    return Response(body, status_code=status, media_type="application/json")


def _json(status: int, body: object) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
