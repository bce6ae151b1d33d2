"""S3 (and S3-compatible stores): one client per endpoint, error mapping, push and pull.

Transfers go through boto3's TransferManager (`upload_file`/`download_file`), which
splits large files into concurrent multipart transfers and writes downloads to a
temporary name before renaming them, so a file under its final name is always
complete. The library cannot resume one interrupted multipart transfer across
processes, so ferry resumes at file granularity instead: a file whose size and ETag
already match on the other side is skipped, and re-running an interrupted push or
pull only moves what is missing or different.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ferry.deploy.package import CHECKSUM_SUFFIX, file_sha256
from ferry.deploy.size_limits import budget, human
from ferry.errors import StatusCode, StorageError
from ferry.repository.location import S3Url

# Fail fast on an unreachable store: the repository watcher retries with its own
# backoff, and a CLI user would rather see the error than wait minutes.
_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=60,
    retries={"max_attempts": 3, "mode": "standard"},
)
DEFAULT_TRANSFER = TransferConfig()  # 8 MiB multipart threshold and part size
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

_clients: dict[tuple[str | None, ...], object] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None = None):
    """A shared boto3 S3 client (clients are thread-safe; creating one costs ~50 ms).

    With a custom endpoint (the argument, or AWS_ENDPOINT_URL[_S3] which boto3 reads
    itself) path-style addressing is used, which every S3-compatible store accepts.
    """
    env_endpoints = tuple(os.environ.get(name) for name in _ENDPOINT_ENV)
    key = (endpoint_url, *env_endpoints)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            custom = endpoint_url or any(env_endpoints)
            config = _CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"} if custom else {}))
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
            _clients[key] = client
        return client


def storage_error(exc: Exception, where: str) -> StorageError:
    """Translate a boto3/botocore exception into a StorageError with a status code."""
    if isinstance(exc, StorageError):
        return exc
    code = StatusCode.UNAVAILABLE
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        code = StatusCode.UNAUTHENTICATED
    elif isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        name = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if name in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            code = StatusCode.PERMISSION_DENIED
        elif name in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            code = StatusCode.UNAUTHENTICATED
        elif name in ("NoSuchBucket", "NoSuchKey", "404") or status == 404:
            code = StatusCode.NOT_FOUND
    return StorageError(f"object storage {where}: {type(exc).__name__}: {exc}", code)


@dataclass(frozen=True)
class RemoteObject:
    """One object as listed: its key relative to the listed prefix, size and ETag."""

    relative_key: str
    size: int
    etag: str


def list_objects(client, url: S3Url) -> Iterator[RemoteObject]:
    """Every object under `url`'s prefix (all pages); raises StorageError."""
    prefix = url.key_prefix
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                yield RemoteObject(
                    item["Key"][len(prefix) :], int(item["Size"]), item["ETag"].strip('"')
                )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise storage_error(exc, f"cannot list {url}") from exc


def safe_relative_path(key: str) -> Path | None:
    """`key` as a relative local path, or None when it could escape the target folder
    (absolute, `..`, empty segments) or names a folder marker (ends in '/')."""
    if not key or key.endswith("/") or key.startswith("/"):
        return None
    parts = key.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts):
        return None
    return Path(*parts)


def file_etag(path: Path, chunk_size: int, multipart: bool) -> str:
    """The ETag S3 gives `path` uploaded in one part (its MD5) or in `chunk_size` parts
    (the MD5 of the parts' MD5s, then "-N")."""
    whole = hashlib.md5(usedforsecurity=False)
    digests = []
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            whole.update(chunk)
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    if not multipart:
        return whole.hexdigest()
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def same_content(path: Path, size: int, etag: str, transfer: TransferConfig) -> bool:
    """True when the local file has the remote object's size and ETag, as far as the ETag
    can be recomputed (a single-part MD5, or multipart with `transfer`'s part size).
    False whenever unsure, so the caller transfers again rather than keep a stale copy."""
    try:
        if path.stat().st_size != size:
            return False
        return file_etag(path, transfer.multipart_chunksize, "-" in etag) == etag
    except OSError:
        return False


@dataclass(frozen=True)
class Transfer:
    """One file to move between `local` and `key`; `skip` when both sides already match."""

    local: Path
    key: str
    size: int
    skip: bool


@dataclass(frozen=True)
class ObjectTarget:
    """Where `push` writes, or what `pull` reads: one object (`key`) or a folder of
    objects (`key` a prefix). An URL ending in '/' is a folder, as with `aws s3 cp`."""

    bucket: str
    key: str
    is_folder: bool

    @classmethod
    def parse(cls, text: str) -> ObjectTarget:
        url = S3Url.parse(text)
        return cls(url.bucket, url.prefix, text.endswith("/") or not url.prefix)

    def child(self, relative: str) -> str:
        return f"{self.key}/{relative}" if self.key else relative


def plan_push(
    client, source: Path, target: ObjectTarget, transfer: TransferConfig = DEFAULT_TRANSFER
) -> list[Transfer]:
    """The uploads `push` makes: a file to the target key (or `target/<name>` when the
    target is a folder), a folder's files under the target prefix. Files whose remote
    copy has the same size and ETag are marked `skip`."""
    if source.is_dir():
        pairs = [
            (path, target.child(path.relative_to(source).as_posix()))
            for path in sorted(source.rglob("*"))
            if path.is_file()
        ]
        listed = S3Url(target.bucket, target.key)
    elif source.is_file():
        key = target.child(source.name) if target.is_folder else target.key
        pairs = [(source, key)]
        checksum = checked_checksum_file(source)
        if checksum is not None:
            # Uploaded beside the archive (after it), so `pull` brings it back and
            # `unpack` checks the download; SageMaker reads only the archive's own key.
            pairs.append((checksum, key + CHECKSUM_SUFFIX))
        listed = S3Url(target.bucket, key.rpartition("/")[0])
    else:
        raise FileNotFoundError(f"{source} does not exist")
    remote = {listed.key_prefix + obj.relative_key: obj for obj in list_objects(client, listed)}
    plan = []
    for path, key in pairs:
        found = remote.get(key)
        skip = found is not None and same_content(path, found.size, found.etag, transfer)
        plan.append(Transfer(path, key, path.stat().st_size, skip))
    return plan


def checked_checksum_file(archive: Path) -> Path | None:
    """`archive`.sha256 (as `ferry package` writes it) when it exists beside `archive`;
    StorageError when it no longer matches, so a stale checksum is never published."""
    checksum = archive.with_name(archive.name + CHECKSUM_SUFFIX)
    if not checksum.is_file():
        return None
    expected = (checksum.read_text(errors="replace").split() or [""])[0]
    actual = file_sha256(archive)
    if expected != actual:
        raise StorageError(
            f"{archive}: sha256 {actual} does not match {checksum} ({expected}): the archive "
            "changed after it was packed; run `ferry package` again (or remove the .sha256)",
            StatusCode.FAILED_PRECONDITION,
        )
    return checksum


def _head(client, bucket: str, key: str) -> RemoteObject | None:
    """The object's size and ETag, None when there is no such object."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if storage_error(exc, "").code != StatusCode.NOT_FOUND:
            raise storage_error(exc, f"cannot read s3://{bucket}/{key}") from exc
        return None
    except botocore.exceptions.BotoCoreError as exc:
        raise storage_error(exc, f"cannot read s3://{bucket}/{key}") from exc
    return RemoteObject(key, int(head["ContentLength"]), head["ETag"].strip('"'))


def plan_pull(
    client,
    target: ObjectTarget,
    dest: Path,
    transfer: TransferConfig = DEFAULT_TRANSFER,
    into_folder: bool = False,
) -> list[Transfer]:
    """The downloads `pull` makes: one object to `dest` (or `dest/<name>` when `dest` is a
    folder, or `into_folder`: DEST was written with a trailing '/', as with `aws s3 cp`),
    with its `.sha256` object when there is one (`unpack` then checks the archive), or
    every object under a prefix to `dest/<relative key>`. Local files with the remote
    size and ETag are marked `skip`. Keys that could escape `dest` are refused."""
    single = None
    if target.key and not target.is_folder:
        single = _head(client, target.bucket, target.key)
    if single is not None:
        name = target.key.rpartition("/")[2]
        local = dest / name if dest.is_dir() or into_folder else dest
        objects = [(single, local)]
        checksum = None
        if not target.key.endswith(CHECKSUM_SUFFIX):
            checksum = _head(client, target.bucket, target.key + CHECKSUM_SUFFIX)
        if checksum is not None:
            objects.append((checksum, local.with_name(local.name + CHECKSUM_SUFFIX)))
    else:
        objects = []
        for obj in list_objects(client, S3Url(target.bucket, target.key)):
            if obj.relative_key.endswith("/"):
                continue  # a folder marker
            relative = safe_relative_path(obj.relative_key)
            if relative is None:
                raise StorageError(
                    f"refusing key {obj.relative_key!r}: it would land outside {dest}",
                    StatusCode.INVALID_ARGUMENT,
                )
            objects.append((obj, dest / relative))
        if not objects:
            raise StorageError(
                f"nothing at s3://{target.bucket}/{target.key}", StatusCode.NOT_FOUND
            )
    prefix = "" if single is not None else S3Url(target.bucket, target.key).key_prefix
    return [
        Transfer(
            local,
            prefix + obj.relative_key if prefix else obj.relative_key,
            obj.size,
            same_content(local, obj.size, obj.etag, transfer),
        )
        for obj, local in objects
    ]


def check_pull_fits(plan: list[Transfer], url: str, dest: Path, max_size: int | None) -> None:
    """SizeLimitError unless what `plan` downloads (the objects' listed sizes) fits in
    `max_size` and the free disk of `dest` less the reserve; checked before the first
    byte is fetched."""
    needed = sum(item.size for item in plan if not item.skip)
    room = budget(dest, max_size)
    if needed > room.limit:
        raise room.refuse(f"{url} ({human(needed)} to download)")


def run_transfers(
    client,
    bucket: str,
    plan: list[Transfer],
    upload: bool,
    transfer: TransferConfig = DEFAULT_TRANSFER,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Move the files of `plan` that are not `skip`; `on_bytes` hears of every chunk
    moved, from the transfer threads (the CLI's progress bar, ferry.cli_progress).

    TransferManager splits each file above the multipart threshold into concurrent
    parts; downloads land under a temporary name and are renamed when complete.
    """
    todo = [item for item in plan if not item.skip]
    for item in todo:
        where = f"s3://{bucket}/{item.key}"
        try:
            if upload:
                client.upload_file(
                    str(item.local), bucket, item.key, Config=transfer, Callback=on_bytes
                )
            else:
                item.local.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(
                    bucket, item.key, str(item.local), Config=transfer, Callback=on_bytes
                )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage_error(
                exc, f"cannot {'upload' if upload else 'download'} {where}"
            ) from exc
