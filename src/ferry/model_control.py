"""Who may change what a running server serves: the operator, never a network client.

The admin APIs (TF Serving's `ModelService/HandleReloadConfigRequest`, the V2 repository
extension's load and unload over REST and gRPC) can unload every model and, through a
reload, point a model at any folder. So they are off unless the server was started with
`--enable_model_control`, and a reload may only use base paths under the roots the
operator allowed (`--model_roots`, by default the roots the server was started with).
With `--auth` they also need a key with the `admin` scope: `ADMIN_GRPC_METHODS` and
`is_admin_http` are the one list of admin entry points the auth middleware checks.

The refusal follows Triton, the only peer with such a switch: model control off is
UNAVAILABLE (HTTP 503) with "explicit model load / unload is not allowed", to which
ferry adds how to turn it on, so TF Serving users looking for the reload API find it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from ferry.errors import FerryError, PermissionDenied, StatusCode
from ferry.model_config import ModelSpec
from ferry.repository.location import BasePath, S3Url, parse_base_path

log = logging.getLogger(__name__)

ENABLE_FLAG = "--enable_model_control"
ROOTS_FLAG = "--model_roots"
RELOAD_API = "HandleReloadConfigRequest"
REPOSITORY_API = "explicit model load / unload"  # Triton's words, which its users match

# Every admin entry point, as the auth layer sees it. Anything else needs `infer`.
ADMIN_GRPC_METHODS = frozenset(
    {
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }
)
_REPOSITORY_PREFIX = "/v2/repository/"
_REPOSITORY_INDEX = "/v2/repository/index"  # read-only: stays an `infer` API
_MME_MODELS = "/models"  # SageMaker multi-model endpoints (ferry.protocols.sagemaker_mme)


def is_admin_http(method: str, path: str) -> bool:
    """Whether an HTTP request reaches an admin API. Over-inclusive on purpose: every
    POST under /v2/repository/ but the index, in any letter case, decoded the way the
    V2 handler decodes it (once more when '%' is left), so no spelling slips past; and
    a multi-model endpoint's load and unload (`POST /models`, `DELETE /models/NAME`)."""
    if method not in ("POST", "DELETE"):
        return False
    if "%" in path:
        path = unquote(path)
    path = path.lower()
    if method == "DELETE":
        return path.startswith(_MME_MODELS + "/")
    if path.rstrip("/") == _MME_MODELS:
        return True
    return path.startswith(_REPOSITORY_PREFIX) and path.rstrip("/") != _REPOSITORY_INDEX


class ModelControlOff(FerryError):
    """An admin API was called on a server started without `--enable_model_control`."""

    code = StatusCode.UNAVAILABLE

    def __init__(self, api: str) -> None:
        super().__init__(
            f"{api} is not allowed: model control is off "
            f"(start ferry serve with {ENABLE_FLAG} to allow it)"
        )


class ModelControl:
    """The operator's choice: whether admin APIs run, and where a reload may read models.

    Local roots are resolved once (symlinks, `..`, relative to the server's working
    folder); a base path is resolved the same way before it is compared, and the
    resolved path is what the reloaded model then reads, so a symlink changed after
    the check cannot move it. Immutable, so it is shared by every protocol freely.
    """

    def __init__(self, enabled: bool = False, roots: Iterable[BasePath] = ()) -> None:
        self.enabled = enabled
        self.roots: tuple[BasePath, ...] = tuple(_resolved(root) for root in roots)

    def require(self, api: str) -> None:
        """Raise ModelControlOff unless the operator enabled model control."""
        if not self.enabled:
            raise ModelControlOff(api)

    def allowed_specs(self, specs: list[ModelSpec]) -> list[ModelSpec]:
        """`specs` with local base paths resolved; PermissionDenied naming the first base
        path that lies outside every root (then nothing may change)."""
        allowed = []
        for spec in specs:
            base = _resolved(spec.base_path)
            if not any(_is_under(base, root) for root in self.roots):
                raise PermissionDenied(
                    f"model {spec.name!r}: base_path {spec.base_path} is outside the folders "
                    f"this server may load models from (ferry serve {ROOTS_FLAG})"
                )
            allowed.append(dataclasses.replace(spec, base_path=base))
        if not allowed:
            log.warning("%s with an empty model_config_list: every model is unloaded", RELOAD_API)
        return allowed


def parse_roots(text: str) -> tuple[BasePath, ...]:
    """`--model_roots PATH[,PATH...]`: local folders and s3://bucket/prefix URLs."""
    roots = tuple(parse_base_path(part.strip()) for part in text.split(",") if part.strip())
    if not roots:
        raise ValueError(f"{ROOTS_FLAG} needs at least one folder or s3:// URL")
    return roots


def _resolved(base: BasePath) -> BasePath:
    return base.expanduser().resolve() if isinstance(base, Path) else base


def _is_under(base: BasePath, root: BasePath) -> bool:
    """Local: `base` is `root` or inside it (both resolved). S3: the same bucket, and the
    key prefix is the root's or below it at a '/' boundary (`models2` is not under
    `models`); a prefix with empty, `.` or `..` segments is never under a root, since
    some S3-compatible stores normalize them and S3 does not."""
    if isinstance(root, Path):
        return isinstance(base, Path) and base.is_relative_to(root)
    if not isinstance(base, S3Url) or base.bucket != root.bucket:
        return False
    if base.prefix and any(part in ("", ".", "..") for part in base.prefix.split("/")):
        return False
    if not root.prefix or base.prefix == root.prefix:
        return True
    return base.prefix.startswith(root.prefix + "/")
