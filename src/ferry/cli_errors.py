"""The `ferry` command's one error boundary: what a failure prints and how it exits.

Each command turns the errors it expects into `click.ClickException` (one line, exit 1;
usage errors stay click's exit 2). Whatever escapes a command arrives here: failures a
user can fix without reading code (a missing optional package, a port in use, an AWS
error) become one line too; anything else is a bug or an environment ferry did not
foresee, so it prints one line naming the exception and the `--debug` switch that shows
the traceback. A traceback by default would bury the one line that matters under 40.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

import click

from ferry.distribution import install_hint
from ferry.errors import ListenError, SetupError

DEBUG_ENV = "FERRY_DEBUG"
_DEBUG_META = "ferry.debug"

# The optional extra that brings each importable top-level module.
_EXTRA_OF_MODULE = {
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tf2onnx": "tensorflow",
    "tf_keras": "tensorflow",
    "ai_edge_litert": "tflite",
    "boto3": "aws",
    "botocore": "aws",
    "s3transfer": "aws",
    "torch": "torch",
    "sklearn": "sklearn",
    "skl2onnx": "sklearn",
}


def set_debug(ctx: click.Context, debug: bool) -> None:
    """Record `--debug` for the boundary (the root context's meta is shared by all)."""
    ctx.meta[_DEBUG_META] = debug


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """Whether `--debug` (or FERRY_DEBUG=1) is on for this invocation."""
    if ctx is not None and _DEBUG_META in ctx.meta:
        return bool(ctx.meta[_DEBUG_META])
    return os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes", "on"}


def known_failure(exc: BaseException) -> str | None:
    """The one line for a failure the user can fix without ferry's code, else None."""
    if isinstance(exc, ImportError):
        return _missing_package(exc)
    if isinstance(exc, ListenError | SetupError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        # PermissionError, FileNotFoundError, a full disk: the path and the OS's words.
        return str(exc)
    if type(exc).__module__.startswith(("botocore", "boto3")):
        # ClientError, ParamValidationError, NoCredentialsError ...: AWS's own words.
        return f"AWS: {exc}"
    return None


def _missing_package(exc: ImportError) -> str | None:
    """A missing optional framework, with the pip line that adds it."""
    module = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF_MODULE.get(module)
    if extra is None:
        # ferry's own MissingExtra and the converters' ImportErrors already say what
        # to install; an unknown module is a broken install, worth its traceback.
        return str(exc) if "pip install" in str(exc) else None
    return f"this needs the Python package '{module}', which is not installed: " + install_hint(
        extra
    )


def report(exc: Exception, ctx: click.Context | None) -> click.ClickException:
    """The exception a command let escape, as the one-line ClickException to exit with;
    with --debug the traceback is printed first."""
    debug = debug_enabled(ctx)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = known_failure(exc)
    if message is None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
        if not debug:
            message += " (run with --debug or FERRY_DEBUG=1 for the traceback)"
    return click.ClickException(message)
