"""How much `ferry unpack` and `ferry pull` may write: `--max-size` and the free disk.

A 6 MB gzip can expand to 6 GiB, and a listing can name more bytes than the disk holds,
so both commands work out a budget before they write anything, and `unpack` keeps to
it while it writes (`BoundedStream`): the decompressed tar stream, headers and all, may
not go past it, so neither a member's declared size nor a flood of tiny members can
take more. The budget is the `--max-size` asked for (for `unpack`, by default a
generous multiple of the archive), and never more than the destination's free space
minus a reserve, so a full disk is refused with a reason instead of failing halfway.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

MIB = 1024 * 1024
GIB = 1024 * MIB
# Left free on the destination's disk, for the system and whatever else writes there:
# 1 GiB, or 5 % of a disk smaller than 20 GiB (a container's scratch volume).
DISK_RESERVE_BYTES = 1 * GIB
DISK_RESERVE_FRACTION = 0.05
# `unpack`'s default budget: model archives (weights barely compress) expand about 1.1x;
# text-heavy ones a few times; a tiny archive still gets the floor.
DEFAULT_EXPANSION = 20
DEFAULT_FLOOR_BYTES = 256 * MIB
MAX_SIZE_FLAG = "--max-size"

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MIB, "g": GIB, "t": 1024 * GIB}


class SizeLimitError(ValueError):
    """The output would exceed `--max-size` or the free disk; the message says which."""


def parse_size(text: str) -> int:
    """`1048576`, `512K`, `1M`, `1MiB`, `2GB`... as bytes (binary units: 1M = 1 MiB)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (bytes, or a number with K, M, G or T)")
    return int(match[1]) * _UNITS[match[2].lower()]


def human(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class Budget:
    """At most `limit` bytes may be written; `reason` says which bound set it, for the
    one-line refusal."""

    limit: int
    reason: str

    def refuse(self, what: str) -> SizeLimitError:
        return SizeLimitError(f"{what} is larger than {human(self.limit)} ({self.reason})")


def budget(folder: Path, requested: int | None, default: int | None = None) -> Budget:
    """The bytes that may be written under `folder`: `requested` (`--max-size`), else
    `default` (None: only the disk bounds it), capped at the free space minus
    DISK_RESERVE_BYTES. SizeLimitError when not even that much is free."""
    room = free_room(folder)
    if room <= 0:
        raise SizeLimitError(
            f"no room on the disk of {folder}: {human(_disk(folder).free)} free, and ferry "
            f"leaves {human(reserve(folder))} free"
        )
    wanted = requested if requested is not None else default
    disk = Budget(room, f"the free disk space of {folder}, less {human(reserve(folder))}")
    if wanted is None or wanted > room:
        return disk
    if requested is not None:
        return Budget(requested, f"{MAX_SIZE_FLAG}")
    return Budget(
        wanted,
        f"the default: {DEFAULT_EXPANSION}x the archive, at least {human(DEFAULT_FLOOR_BYTES)}; "
        f"raise it with {MAX_SIZE_FLAG}",
    )


def unpack_budget(archive: Path, dest: Path, requested: int | None) -> Budget:
    """`unpack`'s budget; the archive itself must fit too (it expands to no less)."""
    size = archive.stat().st_size
    if size > free_room(dest):
        raise SizeLimitError(
            f"no room for {archive} ({human(size)}) on the disk of {dest}: "
            f"{human(_disk(dest).free)} free, and ferry leaves {human(reserve(dest))} free"
        )
    return budget(dest, requested, max(DEFAULT_EXPANSION * size, DEFAULT_FLOOR_BYTES))


def free_room(folder: Path) -> int:
    """Free bytes on `folder`'s disk beyond the reserve (the nearest existing parent
    when `folder` does not exist yet)."""
    return _disk(folder).free - reserve(folder)


def reserve(folder: Path) -> int:
    return min(DISK_RESERVE_BYTES, int(_disk(folder).total * DISK_RESERVE_FRACTION))


class DiskSpace(NamedTuple):
    total: int
    free: int


def _disk(folder: Path) -> DiskSpace:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return DiskSpace(usage.total, usage.free)


class BoundedStream:
    """A readable, seekable stream that refuses to go past `limit` bytes: reading or
    seeking beyond raises SizeLimitError before the bytes are produced. Wraps a
    decompressing file, so the decompressed size is what is bounded."""

    def __init__(self, inner: BinaryIO, budget: Budget, what: str) -> None:
        self._inner = inner
        self._budget = budget
        self._what = what

    def read(self, size: int = -1) -> bytes:
        room = self._budget.limit - self._inner.tell()
        if size < 0 or size > room:
            # One byte past the limit tells "ends exactly there" from "goes on".
            data = self._inner.read(max(room, 0) + 1)
            if len(data) > room:
                raise self._budget.refuse(self._what)
            return data
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._inner.tell() + offset
        if whence not in (0, 1):
            raise OSError("BoundedStream seeks from the start or the current position only")
        if target > self._budget.limit:
            raise self._budget.refuse(self._what)
        return self._inner.seek(target)

    def tell(self) -> int:
        return self._inner.tell()
