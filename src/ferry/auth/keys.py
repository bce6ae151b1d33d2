"""The key file behind `ferry serve --auth FILE`, and its in-memory cache.

The file is JSON, written by `ferry keys create|revoke` (hand edits work too):

    {
      "ferry_keys": 1,
      "keys": [
        {"id": "FKIA4Q2...", "kind": "sigv4", "secret": "...", "name": "ci", "created": "...",
         "scopes": ["infer"]},
        {"id": "FKTK7B3...", "kind": "token", "sha256": "...", "name": "ops", "created": "...",
         "scopes": ["infer", "admin"]}
      ]
    }

- `sigv4` keys are AWS-style access key pairs (`id` is the access key id). SigV4 is an
  HMAC over the request, so the server needs the secret itself: it is stored as is,
  and the file must be readable by its owner only.
- `token` keys are bearer tokens (`Authorization: Bearer <token>`). Only the SHA-256
  of the token is stored: a token is 256 random bits, so a fast hash is as safe as a
  slow one here, and lookups stay one hash plus one dict access per request.
- `scopes` say what a key may do: `infer` (every API that serves or describes models)
  and `admin` (the model-control APIs, ferry.model_control). A key without `scopes`
  (files written before scopes existed) is an `infer` key: the safe reading of an old
  file, logged once.

A file that group or others may read is refused (`KeyFileError`), at start-up and when
re-read. `KeyStore` keeps the keys in dicts and looks at the file's stat at most every
`recheck_seconds`, so a `ferry keys revoke` takes effect within seconds without a
restart, and no request ever reads the file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIGV4 = "sigv4"
TOKEN = "token"
KINDS = (SIGV4, TOKEN)
ACCESS_KEY_PREFIX = "FKIA"
TOKEN_ID_PREFIX = "FKTK"
TOKEN_PREFIX = "ferry_"
INFER = "infer"
ADMIN = "admin"
SCOPES = (INFER, ADMIN)
DEFAULT_SCOPES = (INFER,)


class KeyFileError(Exception):
    """The key file is missing, unsafe (readable by others) or malformed."""


@dataclass(frozen=True)
class KeyEntry:
    """One key as stored; `secret` only for sigv4 keys, `sha256` only for tokens."""

    id: str
    kind: str
    name: str = ""
    created: str = ""
    secret: str = ""
    sha256: str = ""
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    def public(self) -> dict[str, object]:
        """What `ferry keys list` shows: never a secret or a token hash."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "created": self.created,
            "scopes": list(self.scopes),
        }


@dataclass(frozen=True)
class NewKey:
    """A key just created, with the secret the caller must show once and then forget."""

    entry: KeyEntry
    secret: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_permissions(path: Path) -> None:
    """Refuse a key file that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist (create one: ferry keys create --file {path})"
        ) from None
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode {stat.filemode(mode)}); "
            f"it holds secrets, so ferry refuses it: run `chmod 600 {path}`"
        )


def read_key_file(path: Path) -> list[KeyEntry]:
    """The entries of a key file, after checking its permissions and shape."""
    check_permissions(path)
    try:
        document = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not readable JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys", []), list):
        raise KeyFileError(f"key file {path}: expected an object with a `keys` list")
    entries = []
    unscoped = 0
    for number, raw in enumerate(document.get("keys", []), start=1):
        entries.append(_entry(path, number, raw))
        unscoped += isinstance(raw, dict) and "scopes" not in raw
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise KeyFileError(f"key file {path}: key ids must be unique")
    if unscoped:
        _note_unscoped(path, unscoped)
    return entries


_NOTED_UNSCOPED: set[Path] = set()


def _note_unscoped(path: Path, count: int) -> None:
    """Say once per file and process that keys without `scopes` are infer-only."""
    if path in _NOTED_UNSCOPED:
        return
    _NOTED_UNSCOPED.add(path)
    log.warning(
        "key file %s: %d keys have no `scopes`; they are %s-only keys (an admin key: "
        "ferry keys create --scope %s)",
        path,
        count,
        INFER,
        ADMIN,
    )


def _scopes(where: str, raw: Any) -> tuple[str, ...]:
    if "scopes" not in raw:
        return DEFAULT_SCOPES
    value = raw["scopes"]
    if (
        not isinstance(value, list)
        or not value
        or any(not isinstance(scope, str) or scope not in SCOPES for scope in value)
    ):
        raise KeyFileError(
            f"{where} ({raw['id']}): `scopes` must be a non-empty list of {', '.join(SCOPES)}"
        )
    return tuple(scope for scope in SCOPES if scope in value)


def _entry(path: Path, number: int, raw: Any) -> KeyEntry:
    where = f"key file {path}, key {number}"
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise KeyFileError(f"{where}: each key needs a string `id`")
    kind = raw.get("kind")
    if kind == SIGV4 and not (isinstance(raw.get("secret"), str) and raw["secret"]):
        raise KeyFileError(f"{where} ({raw['id']}): a sigv4 key needs its `secret`")
    if kind == TOKEN and not (isinstance(raw.get("sha256"), str) and len(raw["sha256"]) == 64):
        raise KeyFileError(f"{where} ({raw['id']}): a token key needs its `sha256` (64 hex)")
    if kind not in KINDS:
        raise KeyFileError(f"{where} ({raw['id']}): `kind` must be one of {', '.join(KINDS)}")
    return KeyEntry(
        id=raw["id"],
        kind=kind,
        name=str(raw.get("name", "")),
        created=str(raw.get("created", "")),
        secret=raw.get("secret", "") if kind == SIGV4 else "",
        sha256=raw.get("sha256", "").lower() if kind == TOKEN else "",
        scopes=_scopes(where, raw),
    )


def write_key_file(path: Path, entries: list[KeyEntry]) -> None:
    """Replace the file atomically with owner-only permissions (0600 from creation on,
    so the secrets are never briefly readable by others)."""
    document = {
        "ferry_keys": FORMAT_VERSION,
        "keys": [
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in vars(e).items()
                if v != "" or k in ("id", "kind")
            }
            for e in entries
        ],
    }
    data = json.dumps(document, indent=2).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _random_id(prefix: str) -> str:
    # 16 base32 characters (80 bits): the shape of an AWS access key id (AKIA + 16).
    return prefix + base64.b32encode(secrets.token_bytes(10)).decode()


def new_key(kind: str, name: str = "", scopes: tuple[str, ...] = DEFAULT_SCOPES) -> NewKey:
    """A fresh key of `kind`; the returned secret is the only copy of a token."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {list(scopes)}")
    scopes = tuple(scope for scope in SCOPES if scope in scopes)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == SIGV4:
        secret = secrets.token_urlsafe(30)  # 40 characters, like an AWS secret key
        key_id = _random_id(ACCESS_KEY_PREFIX)
        entry = KeyEntry(key_id, SIGV4, name, created, secret=secret, scopes=scopes)
        return NewKey(entry, secret)
    if kind == TOKEN:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key_id = _random_id(TOKEN_ID_PREFIX)
        entry = KeyEntry(key_id, TOKEN, name, created, sha256=token_hash(token), scopes=scopes)
        return NewKey(entry, token)
    raise ValueError(f"unknown key kind {kind!r}")


def add_key(
    path: Path, kind: str, name: str = "", scopes: tuple[str, ...] = DEFAULT_SCOPES
) -> NewKey:
    """Create a key and append it to the file (created with mode 0600 if absent)."""
    entries = read_key_file(path) if path.exists() else []
    created = new_key(kind, name, scopes)
    write_key_file(path, [*entries, created.entry])
    return created


def revoke_key(path: Path, key_id: str) -> KeyEntry:
    """Remove a key by id; KeyFileError when there is none."""
    entries = read_key_file(path)
    kept = [e for e in entries if e.id != key_id]
    if len(kept) == len(entries):
        raise KeyFileError(f"no key {key_id} in {path}")
    write_key_file(path, kept)
    return next(e for e in entries if e.id == key_id)


@dataclass(frozen=True)
class KeySet:
    """One loaded set of keys: SigV4 secrets by access key id, token key ids by the
    token's SHA-256 (hex)."""

    generation: int
    secrets: dict[str, str]
    token_ids: dict[str, str]


class KeyStore:
    """The key file's keys, in memory. Lookups are dict accesses; the file's stat is
    checked at most every `recheck_seconds` (from the request path, so a revoked key
    stops working within that time), and the file is re-read only when it changed.

    Not locked: called from the server's one event loop (HTTP and gRPC share it).
    A file that turns unsafe or unreadable later keeps the last good keys, with an
    error in the log, rather than locking every client out.

    `generation` counts the key sets loaded; `subscribe` hands each new set to a
    callback (the Rust front's checks, ferry.auth.middleware.Authenticator.publish_to).
    """

    def __init__(self, path: Path, recheck_seconds: float = 2.0) -> None:
        self.path = path
        self.recheck_seconds = recheck_seconds
        self._secrets: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        self.generation = 0
        self._subscribers: list[Callable[[KeySet], None]] = []
        self._signature: tuple[int, int, int, int] | None = None
        self._next_check = 0.0
        self._load(read_key_file(path))
        self._signature = self._stat_signature()
        self._next_check = time.monotonic() + recheck_seconds

    def __len__(self) -> int:
        return len(self._secrets) + len(self._tokens)

    def _load(self, entries: list[KeyEntry]) -> None:
        self._secrets = {e.id: e.secret for e in entries if e.kind == SIGV4}
        self._tokens = {e.sha256: e.id for e in entries if e.kind == TOKEN}
        self._scopes = {e.id: frozenset(e.scopes) for e in entries}
        self.generation += 1
        for subscriber in self._subscribers:
            subscriber(self.key_set())

    def key_set(self) -> KeySet:
        """The keys now loaded, with their generation."""
        return KeySet(self.generation, dict(self._secrets), dict(self._tokens))

    def subscribe(self, callback: Callable[[KeySet], None]) -> None:
        """Call `callback` with the keys now, and again whenever the file's keys change."""
        self._subscribers.append(callback)
        callback(self.key_set())

    def current_generation(self) -> int:
        """The generation of the keys in force, after re-reading a changed file (as every
        lookup does)."""
        self.refresh()
        return self.generation

    def _stat_signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)

    def refresh(self, now: float | None = None) -> None:
        """Re-read the file if it changed and the recheck interval has passed."""
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return
        self._next_check = now + self.recheck_seconds
        signature = self._stat_signature()
        if signature == self._signature:
            return
        try:
            self._load(read_key_file(self.path))
        except KeyFileError as exc:
            log.error("keeping the previous keys: %s", exc)
            return
        self._signature = signature
        log.info("key file %s re-read: %d keys", self.path, len(self))

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of a sigv4 key, or None for an unknown (or revoked) key id."""
        self.refresh()
        return self._secrets.get(access_key_id)

    def token_id(self, token: str) -> str | None:
        """The id of the key a bearer token belongs to, or None."""
        self.refresh()
        return self._tokens.get(token_hash(token))

    def scopes_of(self, key_id: str) -> frozenset[str]:
        """What the key may do (empty for an unknown or just-revoked key). Not refreshed:
        called right after the lookup that found the key."""
        return self._scopes.get(key_id, frozenset())
