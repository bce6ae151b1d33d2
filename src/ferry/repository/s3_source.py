"""Model versions in object storage: `s3://bucket/prefix/<int>/...`.

The same layout and semantics as a local model folder: every integer-named "folder"
(key prefix) under the model's prefix is a version; a version's fingerprint is its
objects' keys, sizes and ETags, so the watcher's settle check and change detection
work unchanged. Objects under the model prefix itself (`batching_params.pbtxt`,
`ferry.toml`) are model-level files, as in a local model folder.

Before the manager loads a version, `materialize` downloads it into the local cache:
`<cache>/s3/<bucket>/<prefix>/<version>/<content digest>/`, first into a staging
folder beside it, then renamed into place, so a folder under its final name is
always complete and a download that fails halfway is never loaded. Content-addressed
folder names let a changed version download next to the old one while it keeps
serving; `retain` removes folders no longer listed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import botocore.exceptions

from ferry.deploy.object_store import (
    DEFAULT_TRANSFER,
    RemoteObject,
    list_objects,
    s3_client,
    safe_relative_path,
    same_content,
    storage_error,
)
from ferry.errors import StatusCode, StorageError
from ferry.model_config import ModelSpec
from ferry.repository.catalog import ModelCatalog
from ferry.repository.location import BasePath, ObjectStoreOptions, S3Url
from ferry.repository.model_files import (
    LABEL_FILE_SUFFIX,
    MODEL_LEVEL_FILES,
    POLLED_MODEL_FILES,
    is_model_level_file,
)
from ferry.repository.source import ModelFileTooLarge, StoredVersion, VersionSource

log = logging.getLogger(__name__)

_STAGING_PREFIX = ".staging-"
# A staging folder this old belongs to a process that died mid-download.
_STALE_STAGING_SECONDS = 3600.0


class S3VersionSource(VersionSource):
    """The versions under one model prefix. Used from the watcher thread only."""

    remote = True

    def __init__(self, url: S3Url, options: ObjectStoreOptions, client=None) -> None:
        self.url = url
        self.client = client if client is not None else s3_client(options.endpoint_url)
        self.cache = model_cache_dir(options.resolved_cache_dir(), url)
        self._model_files: dict[str, RemoteObject] = {}
        # Model-level files read through `read_model_file`, by name: (ETag, content), so
        # an unchanged file costs no GET per poll.
        self._read_files: dict[str, tuple[str, bytes]] = {}

    def list_versions(self) -> dict[int, StoredVersion]:
        items: dict[int, list[tuple[str, int, str]]] = {}
        model_files: dict[str, RemoteObject] = {}
        for obj in list_objects(self.client, self.url):
            folder, slash, rest = obj.relative_key.partition("/")
            if not slash:
                if is_model_level_file(folder):
                    model_files[folder] = obj
                continue
            # As on disk: non-numeric folders are ignored; a folder marker ("3/") makes
            # an (empty) version folder.
            if not (folder.isascii() and folder.isdigit()):
                continue
            entries = items.setdefault(int(folder), [])
            if rest:
                entries.append((obj.relative_key, obj.size, obj.etag))
        self._model_files = model_files
        found = {}
        for version, entries in items.items():
            fingerprint = tuple(sorted(entries))
            digest = hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]
            path = self.cache / str(version) / digest
            found[version] = StoredVersion(version, path, fingerprint, model_dir=self.cache)
        return found

    def materialize(self, stored: StoredVersion) -> StoredVersion:
        if stored.path.is_dir():  # complete: only finished downloads get this name
            return stored
        self.cache.mkdir(parents=True, exist_ok=True)
        self._refresh_model_files()
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.cache))
        started = time.monotonic()
        try:
            total = 0
            for relative_key, size, _etag in stored.fingerprint:
                relative = safe_relative_path(str(relative_key))
                if relative is None:
                    raise StorageError(
                        f"{self.url}: refusing object key {relative_key!r}: unsafe as a path",
                        StatusCode.INVALID_ARGUMENT,
                    )
                target = staging / Path(*relative.parts[1:])  # below the version folder
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download(self.url.key_prefix + str(relative_key), target)
                if target.stat().st_size != size:
                    raise StorageError(
                        f"{self.url}/{relative_key}: got {target.stat().st_size} bytes, not {size}",
                        StatusCode.DATA_LOSS,
                    )
                total += size
            stored.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, stored.path)
            except OSError:
                if not stored.path.is_dir():  # not another process finishing first
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:  # the local disk: full, read-only, permissions
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"cannot write the model cache {self.cache}: {exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info(
            "%s/%d: downloaded %d files, %.1f MB in %.2fs to %s",
            self.url,
            stored.version,
            len(stored.fingerprint),
            total / 1e6,
            time.monotonic() - started,
            stored.path,
        )
        return stored

    def retain(self, keep: Iterable[Path]) -> None:
        """Delete cached versions that are not in `keep` and stale staging folders."""
        kept = {Path(p) for p in keep}
        if not self.cache.is_dir():
            return
        for entry in self.cache.iterdir():
            if entry.name.startswith(_STAGING_PREFIX):
                if time.time() - entry.stat().st_mtime > _STALE_STAGING_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.isdigit() and entry.is_dir():
                for content in entry.iterdir():
                    if content not in kept:
                        shutil.rmtree(content, ignore_errors=True)
                if not any(entry.iterdir()):
                    entry.rmdir()

    def read_model_file(self, name: str, max_bytes: int) -> bytes | None:
        """As of the last listing (`list_versions`): its size is checked before the GET,
        and the GET asks for the listed ETag, so the bytes are the listed object's."""
        remote = self._model_files.get(name)
        if remote is None:
            self._read_files.pop(name, None)
            return None
        if remote.size > max_bytes:
            raise ModelFileTooLarge(name, remote.size)
        cached = self._read_files.get(name)
        if cached is not None and cached[0] == remote.etag:
            return cached[1]
        key = self.url.key_prefix + name
        try:
            answer = self.client.get_object(
                Bucket=self.url.bucket, Key=key, IfMatch=f'"{remote.etag}"'
            )
            with answer["Body"] as body:
                content = body.read(max_bytes + 1)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage_error(exc, f"cannot read s3://{self.url.bucket}/{key}") from exc
        if len(content) > max_bytes:
            raise ModelFileTooLarge(name, len(content))
        self._read_files[name] = (remote.etag, content)
        return content

    def _download(self, key: str, target: Path) -> None:
        # TransferManager: concurrent ranged GETs for large objects, written to a temporary
        # name and renamed. (It accepts no IfMatch, so an object replaced between listing
        # and download is caught by the size check, or by the next poll's new fingerprint.)
        try:
            self.client.download_file(self.url.bucket, key, str(target), Config=DEFAULT_TRANSFER)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage_error(exc, f"cannot download s3://{self.url.bucket}/{key}") from exc

    def _refresh_model_files(self) -> None:
        """Bring the cached model-level files in line with the last listing: they are
        read when a version loads, as from a local model folder. (The files the watcher
        reads on every poll come through `read_model_file`, bounded, and are not cached.)"""
        cached_labels = {p.name for p in self.cache.glob(f"*{LABEL_FILE_SUFFIX}")}
        names = {*MODEL_LEVEL_FILES, *self._model_files, *cached_labels} - {*POLLED_MODEL_FILES}
        for name in sorted(names):
            local = self.cache / name
            remote = self._model_files.get(name)
            if remote is None:
                local.unlink(missing_ok=True)
            elif not same_content(local, remote.size, remote.etag, DEFAULT_TRANSFER):
                partial = self.cache / f"{_STAGING_PREFIX}{name}"
                self._download(self.url.key_prefix + name, partial)
                os.replace(partial, local)


class S3RootCatalog(ModelCatalog):
    """Every model prefix under an `s3://` root (`ferry serve s3://bucket/models`), as
    every sub-folder of a local root is a model; hidden (`.x`, `_x`) names are skipped."""

    def __init__(self, root: S3Url, options: ObjectStoreOptions, client=None) -> None:
        self.root = root
        self.client = client if client is not None else s3_client(options.endpoint_url)

    def roots(self) -> tuple[BasePath, ...]:
        return (self.root,)  # no listing at start-up: the root is the operator's choice

    def current(self) -> list[ModelSpec]:
        names: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.root.bucket, Prefix=self.root.key_prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    name = common["Prefix"][len(self.root.key_prefix) :].rstrip("/")
                    if name and not name.startswith((".", "_")):
                        names.add(name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage_error(exc, f"cannot list models under {self.root}") from exc
        return [ModelSpec(name=name, base_path=self.root / name) for name in sorted(names)]


def model_cache_dir(cache_dir: Path, url: S3Url) -> Path:
    """`<cache>/s3/<bucket>/<prefix>`; a prefix that is not a safe relative path is
    replaced by its hash, so no key can place the cache outside `cache_dir`."""
    relative = safe_relative_path(url.prefix) if url.prefix else Path()
    if relative is None or safe_relative_path(url.bucket) is None:
        digest = hashlib.sha256(str(url).encode()).hexdigest()[:32]
        return cache_dir / "s3" / "_hashed" / digest
    return cache_dir / "s3" / url.bucket / relative
