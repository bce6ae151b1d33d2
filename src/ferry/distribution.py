"""ferry's name on the package index, and the install hints that name it.

The import package and the command are `ferry`, but `ferry` on PyPI is an unrelated
project: a hint reading `pip install 'ferry[tensorflow]'` would fetch it. Every hint
and version lookup takes the distribution name from here, so they cannot drift.
"""

from __future__ import annotations

DISTRIBUTION = "ferry-serve"


def install_hint(extra: str | None = None) -> str:
    """The pip command that adds `extra` (or ferry itself): `pip install 'ferry-serve[s3]'`."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"


def installed_version() -> str:
    """The installed distribution's version (the source tree's when run uninstalled)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from ferry import __version__

        return __version__
