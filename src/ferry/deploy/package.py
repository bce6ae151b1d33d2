"""`model.tar.gz` archives: a model folder packed as SageMaker expects it, and back.

Layouts (`NAME` is the model's name, `VERSION` its integer version folders):

  sagemaker  NAME/VERSION/...  plus `code/` (custom handlers, `code/inference.py`) at the
             top, where the SageMaker TensorFlow Serving container and `ferry serve
             --sagemaker` look for it; model-level files (batching_params.pbtxt,
             ferry.toml) stay in NAME/.
  ferry      NAME/... exactly as in a ferry model root (code/ inside NAME/), so that
             `ferry unpack model.tar.gz models/` gives back a servable model folder.

A model folder may hold its versions directly (`NAME/VERSION/`) or in the TF Estimator
export layout (`NAME/export/Servo/VERSION/`); the archive has `NAME/VERSION/`, or with
`keep_servo` (sagemaker layout) `export/Servo/VERSION/` as Estimator exports and the
SageMaker SDK's TensorFlow archives have it. Several model folders may go into one
archive (a SageMaker endpoint serving several models from one `model.tar.gz`).

Archives are reproducible: the same files give the same bytes (sorted entries; mtime
fixed at $SOURCE_DATE_EPOCH or 0; uid/gid 0 with no owner names; modes 0644, or 0755
for folders and executables; a gzip header without name or time), so a checksum says
whether a model changed. `unpack` checks every entry before it writes anything and
refuses absolute paths, `..`, links and special files that could reach outside the
target folder. It also keeps to a size budget (ferry.deploy.size_limits: `--max-size`,
by default 20x the archive, never more than the free disk less a reserve), counted on
the decompressed stream as it is read, and on any failure removes what it created.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from ferry.consent import CODE_ENV, PICKLE_ENV
from ferry.deploy.size_limits import BoundedStream, SizeLimitError, unpack_budget
from ferry.model_options import OPTIONS_FILE
from ferry.repository.model_files import is_model_level_file
from ferry.repository.source import CACHE_DIR_NAME

log = logging.getLogger(__name__)

Layout = Literal["sagemaker", "ferry"]
CODE_DIR = "code"
SERVO_DIR = ("export", "Servo")
CHECKSUM_SUFFIX = ".sha256"
# Never packed: ferry's derived caches, Python bytecode, editor and OS litter.
_SKIPPED_NAMES = {CACHE_DIR_NAME, "__pycache__", ".DS_Store", ".ipynb_checkpoints"}


class PackageError(ValueError):
    """The model folder cannot be packed, or the archive cannot be safely unpacked."""


@dataclass(frozen=True)
class Packed:
    """A written archive, its sha256 (hex) and the checksum file beside it."""

    archive: Path
    sha256: str
    checksum_file: Path
    entries: int


def package(
    model_dirs: Path | Sequence[Path],
    output: Path,
    layout: Layout = "sagemaker",
    name: str | None = None,
    keep_servo: bool = False,
) -> Packed:
    """Pack one model folder, or several into one archive, into `output` (written
    atomically) and `output`.sha256.

    Several models: each keeps its folder's name (`name` is for one model only), names
    must differ, and in the sagemaker layout at most one may bring a `code/` folder (the
    archive's top `code/` serves every model, as in the container). `keep_servo`: a
    model in the TF Estimator layout keeps `export/Servo/VERSION/` (at the archive's top
    for one model, under its name for several), so the container and `ferry serve
    --sagemaker` serve it as `Servo`, the name its clients may already send."""
    if layout not in ("sagemaker", "ferry"):
        raise PackageError(f"unknown layout {layout!r}")
    if keep_servo and layout != "sagemaker":
        raise PackageError("keep_servo is for the sagemaker layout (a ferry root has NAME/)")
    folders = [model_dirs] if isinstance(model_dirs, Path) else list(model_dirs)
    if not folders:
        raise PackageError("no model folder to pack")
    if name is not None and len(folders) > 1:
        raise PackageError("--name is for one model folder; several keep their folders' names")
    members: dict[str, Path | None] = {}  # archive name -> local file or folder (None: a folder)
    names: list[str] = []
    code_from: list[str] = []
    for folder in folders:
        model_name = _add_model(
            members, folder.resolve(), layout, name, keep_servo, alone=len(folders) == 1
        )
        if model_name in names:
            raise PackageError(f"two model folders are both named {model_name!r}")
        names.append(model_name)
        if (folder / CODE_DIR).is_dir():
            code_from.append(model_name)
    if layout == "sagemaker" and len(code_from) > 1:
        raise PackageError(
            f"{' and '.join(code_from)} both have a code/ folder: a SageMaker archive has one "
            "code/ for every model (pack them apart, or merge their code/)"
        )
    _note_consent(", ".join(names), members)
    for archive_name in list(members):  # every parent folder gets its own entry
        for parent in PurePosixPath(archive_name).parents:
            if str(parent) != ".":
                members.setdefault(str(parent), None)

    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, staging_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    staging = Path(staging_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive(raw, members)
        digest = file_sha256(staging)
        os.replace(staging, output)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    checksum_file = output.with_name(output.name + CHECKSUM_SUFFIX)
    # sha256sum's format, so `sha256sum -c model.tar.gz.sha256` checks it.
    checksum_file.write_text(f"{digest}  {output.name}\n")
    return Packed(output, digest, checksum_file, len(members))


def _add_model(
    members: dict[str, Path | None],
    model_dir: Path,
    layout: Layout,
    name: str | None,
    keep_servo: bool,
    alone: bool,
) -> str:
    """Add one model folder's versions, model-level files and code/; returns its name."""
    if not model_dir.is_dir():
        raise PackageError(f"{model_dir} is not a folder")
    name = name or model_dir.name
    if not name or "/" in name or name in (".", ".."):
        raise PackageError(f"not a usable model name: {name!r}")
    versions_dir = model_dir / Path(*SERVO_DIR)
    servo = bool(_version_folders(versions_dir))
    if not servo:
        versions_dir = model_dir
    versions = _version_folders(versions_dir)
    if not versions:
        raise PackageError(
            f"{model_dir} has no integer version folders (NAME/VERSION/ or "
            "NAME/export/Servo/VERSION/)"
        )
    # Where the versions go: NAME/, or the export layout kept (the model is then Servo).
    model_prefix = name
    if keep_servo and servo:
        servo_path = "/".join(SERVO_DIR)
        model_prefix = servo_path if alone else f"{name}/{servo_path}"
    for version in versions:
        _add_tree(members, version, f"{model_prefix}/{int(version.name)}")
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and is_model_level_file(path.name):
            members[f"{model_prefix}/{path.name}"] = path
    code = model_dir / CODE_DIR
    if code.is_dir():
        _add_tree(members, code, CODE_DIR if layout == "sagemaker" else f"{name}/{CODE_DIR}")
    return name


def _note_consent(name: str, members: dict[str, Path | None]) -> None:
    """Say what the endpoint's operator must allow: the archive cannot carry consent (a
    packed ferry.toml's allow_code/allow_pickle grant nothing, see ferry.consent), and
    `--sagemaker` reads code/inference.py only at the archive's top (the sagemaker
    layout), never inside NAME/."""
    for member, path in members.items():
        if PurePosixPath(member).name == OPTIONS_FILE and path is not None and path.is_file():
            text = path.read_text(errors="replace")
            if "allow_code" in text or "allow_pickle" in text:
                log.warning(
                    "%s sets allow_code/allow_pickle, which grant nothing on an endpoint: "
                    "consent is the deploy's (ferry deploy sagemaker --allow-code / "
                    "--allow-pickle set %s / %s on the container)",
                    member,
                    CODE_ENV,
                    PICKLE_ENV,
                )
    for nested in members:
        parts = PurePosixPath(nested).parts
        if len(parts) != 3 or parts[1:] != (CODE_DIR, "inference.py"):
            continue
        log.warning(
            "%s: ferry serve --sagemaker and the SageMaker container read code/inference.py "
            "only at the archive's top; pack with the sagemaker layout to serve it there",
            nested,
        )
    code = [n for n in members if PurePosixPath(n).name in ("model.py", "inference.py")]
    pickles = [n for n in members if PurePosixPath(n).name in ("model.joblib", "model.pkl")]
    if any(PurePosixPath(n).name == "inference.py" for n in code):
        log.warning(
            "%s holds code/inference.py: the endpoint runs it only with %s='*' "
            "(ferry deploy sagemaker --allow-code '*')",
            name,
            CODE_ENV,
        )
    elif code:
        log.warning(
            "%s holds model.py: the endpoint runs it only with ferry deploy sagemaker "
            "--allow-code %s (ferry serve --allow_code %s)",
            name,
            name,
            name,
        )
    if pickles:
        log.warning(
            "%s holds a pickle: the endpoint unpickles it only with ferry deploy sagemaker "
            "--allow-pickle %s (ferry serve --allow_pickle %s)",
            name,
            name,
            name,
        )


def unpack(archive: Path, dest: Path, max_size: int | None = None) -> list[str]:
    """Extract `archive` into `dest` after checking every entry; returns the names.

    When `archive`.sha256 exists beside it, the archive must match it. The decompressed
    archive may not exceed `max_size` bytes (None: the default budget, see
    ferry.deploy.size_limits) nor the free disk; past it, extraction stops. On any
    failure every file and folder this call created is removed again (files it
    overwrote stay overwritten) and PackageError says why in one line.
    """
    checksum_file = archive.with_name(archive.name + CHECKSUM_SUFFIX)
    if checksum_file.is_file():
        expected = (checksum_file.read_text().split() or [""])[0]
        actual = file_sha256(archive)
        if expected != actual:
            raise PackageError(
                f"{archive}: sha256 {actual} does not match {checksum_file} ({expected})"
            )
    try:
        budget = unpack_budget(archive, dest, max_size)
    except SizeLimitError as exc:
        raise PackageError(str(exc)) from None
    created = _missing_ancestors(dest.absolute())
    try:
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        with _decompressed(archive) as raw:
            stream = BoundedStream(raw, budget, f"{archive} unpacked")
            with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
                members = tar.getmembers()  # reads the whole stream: the budget applies
                for member in members:
                    _check_member(member, root)
                created.extend(_new_paths(root, [m.name for m in members]))
                # Checked above with clear messages; the standard "data" filter also
                # applies (it drops setuid bits and refuses anything it considers unsafe).
                tar.extractall(root, members=members, filter="data")
    except BaseException as exc:
        _remove_new(created)
        if isinstance(exc, SizeLimitError | PackageError):
            raise PackageError(str(exc)) from None
        if isinstance(exc, tarfile.TarError | EOFError | zlib.error | lzma.LZMAError):
            raise PackageError(f"{archive}: not a readable archive: {exc}") from None
        if isinstance(exc, OSError):
            raise PackageError(f"{archive}: cannot unpack into {dest}: {exc}") from None
        raise
    return [m.name for m in members]


@contextlib.contextmanager
def _decompressed(archive: Path) -> Iterator[io.BufferedIOBase]:
    """The archive's tar stream: gzip, bzip2 and xz are recognized by their magic bytes
    (as `tarfile.open(mode="r:*")` does), anything else is read as a plain tar."""
    with open(archive, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            opened: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb")
        elif magic.startswith(b"BZh"):
            opened = bz2.BZ2File(raw, "rb")
        elif magic.startswith(b"\xfd7zXZ\x00"):
            opened = lzma.LZMAFile(raw, "rb")  # noqa: SIM115 - closed by `with opened`
        else:
            opened = raw  # type: ignore[assignment]
        with opened:
            yield opened


def _missing_ancestors(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _new_paths(root: Path, names: list[str]) -> list[Path]:
    """The paths (entries and the folders implied above them) that do not exist yet."""
    new: dict[Path, None] = {}
    for name in names:
        path = root
        for part in PurePosixPath(name).parts:
            path = path / part
            if path not in new and not os.path.lexists(path):
                new[path] = None
    return list(new)


def _remove_new(created: list[Path]) -> None:
    """Remove what unpack created: the outermost new paths, with everything below them
    (all of it written by this unpack)."""
    new = set(created)
    for path in created:
        if path.parent in new:
            continue  # removed with its parent
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [
        entry
        for entry in folder.iterdir()
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir()
    ]
    numbers = [int(entry.name) for entry in found]
    if len(set(numbers)) != len(numbers):
        raise PackageError(f"{folder}: two version folders have the same number")
    return sorted(found, key=lambda entry: int(entry.name))


def _add_tree(members: dict[str, Path | None], folder: Path, prefix: str) -> None:
    """`folder` and everything below it (links followed) as `prefix/...`."""
    members[prefix] = folder
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_NAMES]
        relative = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
        for child in dirnames + filenames:
            if child in _SKIPPED_NAMES:
                continue
            path = Path(dirpath) / child
            if not path.exists():  # a dangling link
                raise PackageError(f"{path} is a broken link")
            members[str(PurePosixPath(prefix) / relative / child)] = path


def _source_date() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else 0


def _write_archive(raw: io.BufferedIOBase, members: dict[str, Path | None]) -> None:
    mtime = _source_date()
    # No file name and a zero time in the gzip header: same input, same bytes.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for archive_name in sorted(members):
            path = members[archive_name]
            info = tarfile.TarInfo(archive_name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            # Links are followed: the archive holds plain files and folders only.
            st = path.stat() if path is not None else None
            if st is None or stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                with open(path, "rb") as file:
                    tar.addfile(info, file)
            else:
                raise PackageError(f"{path} is neither a file nor a folder")


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    """Refuse an entry that would land (or point) outside `root`, or a special file."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")) or ".." in parts:
        raise PackageError(f"refusing {name!r}: it would be written outside the target")
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise PackageError(f"refusing {name!r}: it would be written outside the target")
    if member.issym() or member.islnk():
        base = target.parent if member.issym() else root
        linked = (base / member.linkname).resolve()
        if PurePosixPath(member.linkname).is_absolute() or not linked.is_relative_to(root):
            raise PackageError(
                f"refusing {name!r}: a link to {member.linkname!r} outside the target"
            )
    elif not (member.isfile() or member.isdir()):
        raise PackageError(f"refusing {name!r}: not a regular file or folder")
