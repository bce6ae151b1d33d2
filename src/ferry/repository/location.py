"""Where a model's versions live: a local folder or an `s3://bucket/prefix` URL.

`ModelSpec.base_path` holds either. Only the repository layer looks inside an
`S3Url`: the watcher picks a version source by its type, and versions from object
storage are copied into a local cache before the manager sees them, so the manager
and the runtimes only ever deal with local folders.

This module imports no AWS library, so configuring or parsing models costs nothing
for users without object storage.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ferry.distribution import install_hint

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix`: a bucket and a key prefix without leading or trailing '/'."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> S3Url:
        """Parse `s3://bucket[/prefix]`; ValueError for anything else."""
        if not text.startswith(S3_SCHEME):
            raise ValueError(f"not an s3:// URL: {text!r}")
        bucket, _, prefix = text[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"s3 URL without a bucket: {text!r}")
        return cls(bucket, prefix.strip("/"))

    def __truediv__(self, name: str) -> S3Url:
        """The child prefix `name`, so that code joining a base path and a model name
        (`base / name`) works for local folders and URLs alike."""
        return S3Url(self.bucket, f"{self.prefix}/{name}" if self.prefix else name)

    @property
    def key_prefix(self) -> str:
        """The prefix as S3 lists it: '' for the bucket root, else ending in '/'."""
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


# What a model's base path (or a root of models) may be.
BasePath = Path | S3Url


def parse_base_path(text: str) -> BasePath:
    """An `s3://` URL or a local path (tilde expanded, not resolved)."""
    if text.startswith(S3_SCHEME):
        return S3Url.parse(text)
    return Path(text).expanduser()


S3_EXTRA_HINT = f"s3:// paths need boto3: {install_hint('s3')}"


def s3_support_installed() -> bool:
    """Whether the `s3` extra (boto3) is installed, checked without importing it."""
    return importlib.util.find_spec("boto3") is not None


def default_cache_dir() -> Path:
    """ferry's folder under the user's cache folder (XDG on Linux, ~/Library/Caches on
    macOS, %LOCALAPPDATA% on Windows): where versions from object storage are kept."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ferry"


@dataclass(frozen=True)
class ObjectStoreOptions:
    """How to reach object storage (`--s3_endpoint_url`, `--model_cache_dir`,
    `--s3_event_queue_url`).

    `endpoint_url` None means boto3's own choice: AWS, or `AWS_ENDPOINT_URL_S3` /
    `AWS_ENDPOINT_URL` from the environment. Credentials always come from boto3's
    standard chain (environment, shared files, instance or container roles).
    """

    endpoint_url: str | None = None
    cache_dir: Path | None = None  # None: default_cache_dir()
    event_queue_url: str | None = None  # SQS queue of the bucket's event notifications

    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()
