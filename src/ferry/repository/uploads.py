"""Model files sent in a V2 repository load request (Triton's `file:<version>/<name>`
parameters, tritonclient's `load_model(..., files=...)`), written into a folder of their
own that the model is then served from.

Why this is safe enough to offer: the load API runs only with `--enable_model_control`
(and under `--auth` only for admin keys); each upload goes into a fresh folder in a
temporary directory ferry owns, never into the operator's model folders; every path is
checked to stay inside that folder (relative, no `..`, no hidden or empty parts, a
version number first); the files are bounded by the request size and all uploads
together by `--max_uploaded_model_bytes`; and a model served from an upload is
untrusted (`ModelSpec.trusted=False`), so it never gets consent to run code or unpickle
whatever `--allow_code` says. As in Triton, a `config` override must come with the files.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

from ferry.errors import InvalidArgument, ResourceExhausted

FILE_PREFIX = "file:"
# `ferry serve --max_uploaded_model_bytes`: all uploaded models' files together.
DEFAULT_MAX_UPLOADED_BYTES = 4 << 30


def file_parameters(parameters: dict[str, object], base64_encoded: bool) -> dict[str, bytes]:
    """The `file:` parameters of a load request as relative path -> content. Over REST
    the contents are base64 strings (Triton's JSON form); over gRPC, bytes."""
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if not key.startswith(FILE_PREFIX):
            continue
        path = safe_relative_path(key[len(FILE_PREFIX) :], key)
        if base64_encoded:
            if not isinstance(value, str):
                raise InvalidArgument(f"parameter '{key}': expected a base64 string")
            try:
                content = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument(f"parameter '{key}': not valid base64") from None
        elif isinstance(value, bytes):
            content = value
        else:
            raise InvalidArgument(f"parameter '{key}': expected bytes_param")
        files[path] = content
    return files


def safe_relative_path(text: str, key: str) -> str:
    """`text` as a path inside a model folder, `<version>/<name>...`, or InvalidArgument:
    nothing absolute, no `..`, `.`, empty or hidden part, no backslash."""
    path = PurePosixPath(text)
    parts = path.parts
    if (
        not text
        or "\\" in text
        or path.is_absolute()
        or len(parts) < 2
        or not parts[0].isdigit()
        or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
    ):
        raise InvalidArgument(
            f"parameter '{key}': a file override must be named file:<version>/<path> inside "
            "the model folder (no absolute path, '..' or hidden names)"
        )
    return "/".join(parts)


class ModelUploads:
    """Folders of uploaded model files, one current folder per model name."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_UPLOADED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._root: Path | None = None  # created on the first upload
        self._current: dict[str, tuple[Path, int]] = {}  # model -> (folder, bytes)
        self._lock = threading.Lock()
        self._count = 0

    def write(self, model: str, files: dict[str, bytes]) -> Path:
        """A fresh folder holding `files` for `model` (its previous upload is kept until
        `commit` or `discard` says which one serves)."""
        size = sum(len(content) for content in files.values())
        with self._lock:
            others = sum(n for name, (_, n) in self._current.items() if name != model)
            if others + size > self.max_bytes:
                raise ResourceExhausted(
                    f"failed to load '{model}': uploaded model files would take "
                    f"{others + size} bytes, more than --max_uploaded_model_bytes "
                    f"({self.max_bytes})"
                )
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="ferry-uploads-"))
            self._count += 1
            folder = self._root / f"{self._count:06d}"
        for relative, content in files.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return folder

    def commit(self, model: str, folder: Path) -> None:
        """`folder` now serves `model`; the previous upload's files go."""
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        with self._lock:
            previous = self._current.get(model)
            self._current[model] = (folder, size)
        if previous is not None and previous[0] != folder:
            shutil.rmtree(previous[0], ignore_errors=True)

    def discard(self, folder: Path) -> None:
        """An upload that did not load."""
        shutil.rmtree(folder, ignore_errors=True)

    def forget(self, model: str) -> None:
        """`model` is served from the operator's repository again."""
        with self._lock:
            previous = self._current.pop(model, None)
        if previous is not None:
            shutil.rmtree(previous[0], ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            root, self._root = self._root, None
            self._current.clear()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
