"""`ferry package`, `ferry unpack`, `ferry push`, `ferry pull`: a model folder to an
archive and object storage, and back. Registered in ferry.cli with `add_command`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ferry.cli_spelling import AliasedOption

if TYPE_CHECKING:
    from ferry.deploy.object_store import ObjectTarget, Transfer


class ByteSize(click.ParamType):
    """A size in bytes, or with K, M, G or T (binary: 1M = 1 MiB)."""

    name = "SIZE"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        from ferry.deploy.size_limits import parse_size

        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _max_size_option(help_text: str):
    return click.option("--max-size", "--max_size", "max_size", type=ByteSize(), help=help_text)


_ENDPOINT_HELP = (
    "S3-compatible store (MinIO, moto, ...); default: AWS, or $AWS_ENDPOINT_URL_S3 / "
    "$AWS_ENDPOINT_URL. Credentials: boto3's standard chain."
)


@click.command()
@click.argument(
    "model_dirs",
    metavar="MODEL_DIR...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default="model.tar.gz",
    show_default=True,
    help="The archive to write; its sha256 goes to OUTPUT.sha256.",
)
@click.option(
    "--layout",
    type=click.Choice(["sagemaker", "ferry"]),
    default="sagemaker",
    show_default=True,
    help="sagemaker: NAME/VERSION/... with code/ at the top (SageMaker's TensorFlow "
    "Serving container); ferry: NAME/... as in a ferry model root.",
)
@click.option("--name", help="Model name in the archive (one MODEL_DIR; default: its name).")
@click.option(
    "--keep-servo",
    "--keep_servo",
    "keep_servo",
    is_flag=True,
    help="Keep a TF Estimator export's export/Servo/VERSION/ path (sagemaker layout): the "
    "model is then served as Servo, as from the SageMaker SDK's TensorFlow archives.",
)
def package(
    model_dirs: tuple[Path, ...], output: Path, layout: str, name: str | None, keep_servo: bool
) -> None:
    """Pack MODEL_DIR (NAME/VERSION/... or NAME/export/Servo/VERSION/..., with code/ when
    present), or several into one archive, into a reproducible model.tar.gz and print
    its sha256."""
    from ferry.cli_progress import working
    from ferry.deploy.package import PackageError
    from ferry.deploy.package import package as pack

    what = model_dirs[0] if len(model_dirs) == 1 else f"{len(model_dirs)} model folders"
    try:
        with working(f"packing {what} into {output}"):
            packed = pack(list(model_dirs), output, layout, name, keep_servo)  # type: ignore[arg-type]
    except PackageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {packed.archive} ({packed.entries} entries)")
    click.echo(f"{packed.sha256}  {packed.archive.name}")


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_max_size_option(
    "Stop when the unpacked archive passes this size (default: 20x the archive, at least "
    "256M; never more than DEST's free disk less a reserve)."
)
def unpack(archive: Path, dest: Path, max_size: int | None) -> None:
    """Extract a model ARCHIVE into DEST, refusing entries that would land outside DEST;
    checked against ARCHIVE.sha256 when that file exists. A failed unpack removes what
    it wrote."""
    from ferry.cli_progress import working
    from ferry.deploy.package import PackageError
    from ferry.deploy.package import unpack as extract

    try:
        with working(f"unpacking {archive} into {dest}"):
            names = extract(archive, dest, max_size)
    except PackageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"unpacked {len(names)} entries into {dest}")


def _storage_command(function):
    """The options every object-storage verb shares."""
    function = click.option(
        "--endpoint_url",
        "--s3_endpoint_url",
        "s3_endpoint_url",
        cls=AliasedOption,
        hidden_aliases=("--s3_endpoint_url",),
        help=_ENDPOINT_HELP,
    )(function)
    function = click.option(
        "--quiet",
        is_flag=True,
        help="No progress: no bar on a terminal, no start and end lines elsewhere.",
    )(function)
    return function


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("url")
@_storage_command
def push(source: Path, url: str, s3_endpoint_url: str | None, quiet: bool) -> None:
    """Upload SOURCE (a file, e.g. model.tar.gz, or a folder) to URL (s3://bucket/key;
    ending in '/', or a folder SOURCE: under that prefix). A file's SOURCE.sha256 (from
    `ferry package`) is checked and uploaded beside it. Multipart for large files;
    files already there with the same size and ETag are skipped, so re-running an
    interrupted push only sends what is missing."""
    _require_boto3()
    from ferry.deploy.object_store import plan_push

    _transfer(url, s3_endpoint_url, quiet, True, lambda c, t: plan_push(c, source, t))


@click.command()
@click.argument("url")
@click.argument("dest", type=click.Path())
@_storage_command
@_max_size_option(
    "Refuse to download more than this in all (default: DEST's free disk less a reserve)."
)
def pull(
    url: str, dest: str, s3_endpoint_url: str | None, quiet: bool, max_size: int | None
) -> None:
    """Download URL (one s3:// object, or every object under a prefix) to DEST (one
    object goes into DEST when it is a folder or ends in '/'; its .sha256 comes with it).
    Local files with the same size and ETag are skipped; each file appears under its
    name only once complete. Nothing is fetched unless it all fits (the objects' sizes
    against --max-size and the free disk)."""
    _require_boto3()
    from ferry.deploy.object_store import check_pull_fits, plan_pull

    # Path() drops a trailing '/', which is what says "into this folder" (as aws s3 cp).
    into_folder = dest.endswith(("/", os.sep))
    folder = Path(dest)

    def plan(client, target: ObjectTarget) -> list[Transfer]:
        items = plan_pull(client, target, folder, into_folder=into_folder)
        check_pull_fits(items, url, folder, max_size)
        return items

    _transfer(url, s3_endpoint_url, quiet, False, plan)


def _require_boto3() -> None:
    """push and pull need boto3 (the s3 extra): say so in one line, before anything
    imports it."""
    from ferry.repository.location import S3_EXTRA_HINT

    try:
        import boto3  # noqa: F401 - imported only to learn whether it is there
    except ImportError:
        raise click.ClickException(S3_EXTRA_HINT) from None


def _transfer(
    url: str,
    endpoint_url: str | None,
    quiet: bool,
    upload: bool,
    plan: Callable[[Any, ObjectTarget], list[Transfer]],
) -> None:
    """Plan (which hashes local files that may already be there), then run the
    transfers with a progress bar, and summarise; storage errors become a one-line
    message, not a traceback."""
    from ferry.cli_progress import BYTES, working
    from ferry.deploy.object_store import ObjectTarget, run_transfers, s3_client
    from ferry.deploy.size_limits import SizeLimitError, human
    from ferry.errors import StorageError

    try:
        target = ObjectTarget.parse(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    client = s3_client(endpoint_url)
    verb = "uploading" if upload else "downloading"
    try:
        with working(f"listing {url} and comparing it with the local files", quiet=quiet):
            items = plan(client, target)
        todo = [item for item in items if not item.skip]
        if todo:
            size = sum(item.size for item in todo)
            what = f"{verb} {len(todo)} files ({human(size)})"
            with working(what, total=size, unit=BYTES, quiet=quiet) as step:
                run_transfers(client, target.bucket, items, upload, on_bytes=step.advance)
    except (StorageError, FileNotFoundError, SizeLimitError) as exc:
        raise click.ClickException(str(exc)) from None
    moved = todo
    skipped = len(items) - len(moved)
    click.echo(
        f"{'uploaded' if upload else 'downloaded'} {len(moved)} files "
        f"({sum(i.size for i in moved)} bytes)"
        + (f", {skipped} unchanged skipped" if skipped else "")
    )
