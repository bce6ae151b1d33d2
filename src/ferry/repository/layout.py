"""Layout mistakes that would serve nothing, said loudly: what was found, what was
expected, and the fix.

Two mistakes are common and were silent: model files put straight into the model's
folder (no integer version folder), and a root given one level too deep, which serves
the version folder's `variables` and `assets` (or a model named `1`) as models. TF
Serving logs `No versions of servable <name> found under base path <path>. Did you
forget to name your leaf directory as a number (eg. '/1/')?` at WARNING on every poll
(file_system_storage_path_source.cc); ferry logs its own sentence with the same opening,
so a search for TF Serving's words finds it, once per change of the folder rather than
every poll (a folder that stays wrong says so again only when its content changes).

Local folders only: an object-store prefix is listed by key, and its listing error
already names the prefix.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ferry.runtimes import RUNTIMES

log = logging.getLogger(__name__)

# A SavedModel's sub-folders: served as models when the root is a version folder.
SAVED_MODEL_FOLDERS = frozenset({"variables", "assets", "assets.extra"})
# Entries named in a message (the rest are counted).
_SHOWN_ENTRIES = 6


def is_version_name(name: str) -> bool:
    """An integer version folder's name, as the sources read it (ASCII digits only)."""
    return name.isascii() and name.isdigit()


def holds_model_files(folder: Path) -> bool:
    """Whether `folder` holds a model itself, as a version folder does (any runtime
    would load it: the same cheap file checks that choose the runtime)."""
    return any(runtime.can_load(folder) for runtime in RUNTIMES)


def describe_entries(folder: Path) -> str:
    """`saved_model.pb, variables/`: the visible entries of `folder`, folders marked."""
    try:
        entries = sorted(
            (e.name + "/" if e.is_dir() else e.name)
            for e in os.scandir(folder)
            if not e.name.startswith(".")
        )
    except OSError:
        return "nothing readable"
    if not entries:
        return "nothing"
    more = len(entries) - _SHOWN_ENTRIES
    shown = ", ".join(entries[:_SHOWN_ENTRIES])
    return shown + (f" and {more} more" if more > 0 else "")


def model_folder_problem(name: str, base_path: Path) -> str:
    """What is wrong with model `name`'s folder, in which no version folder was found,
    and how to fix it."""
    opening = f"No versions of servable {name} found under base path {base_path}"
    found = describe_entries(base_path)
    if name in SAVED_MODEL_FOLDERS or (
        is_version_name(base_path.parent.name) and holds_model_files(base_path.parent)
    ):
        version_dir = base_path.parent
        return (
            f"{opening}: {version_dir} looks like a version folder (found "
            f"{describe_entries(version_dir)}), so its sub-folder {name}/ was taken for a "
            f"model: serve {version_dir.parent.parent} (the folder of models), or name the "
            f"model: --model_name {version_dir.parent.name} --model_base_path "
            f"{version_dir.parent}"
        )
    if is_version_name(name) and holds_model_files(base_path):
        return (
            f"{opening}: {base_path} looks like a version folder (found {found}): serve the "
            f"parent folder's parent {base_path.parent.parent} (the folder of models), or "
            f"name the model: --model_name {base_path.parent.name} --model_base_path "
            f"{base_path.parent}"
        )
    if holds_model_files(base_path):
        return (
            f"{opening}: {base_path} has no version folders (found {found}): move them "
            f"into {base_path / '1'}/"
        )
    return (
        f"{opening} (found {found}): expected integer version folders such as "
        f"{base_path / '1'}/ holding the model files"
    )


def root_problem(root: Path) -> str | None:
    """What is wrong with a root of models (`ferry serve ROOT`), None when nothing looks
    wrong: a root that is one model's folder (it holds version folders) or a version
    folder (it holds model files)."""
    try:
        versions = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and is_version_name(e.name)
        )
    except OSError:
        return None  # the catalog reports an unreadable root itself
    if holds_model_files(root):
        model_dir = root.parent if is_version_name(root.name) else root
        return (
            f"model root {root} holds model files (found {describe_entries(root)}), so its "
            f"sub-folders are taken for models: a root holds one folder per model, each "
            f"with version folders ({model_dir.parent}/<model>/1/...). Serve "
            f"{model_dir.parent}, or name the model: --model_name {model_dir.name} "
            f"--model_base_path {model_dir}"
            + ("" if model_dir != root else f" after moving the files into {root / '1'}/")
        )
    if versions:
        shown = ", ".join(v + "/" for v in versions[:_SHOWN_ENTRIES])
        return (
            f"model root {root} holds version folders ({shown}), so they are served as "
            f"models named {versions[0]}...: {root} looks like one model's folder. Serve "
            f"{root.parent} (the folder of models), or name the model: --model_name "
            f"{root.name} --model_base_path {root}"
        )
    return None


class LayoutWarnings:
    """Logs each problem at WARNING once per change: a key (a model, a root) is logged
    again only when its message changes (the folder's content changed) or after it was
    fixed and broke again. Thread-safe (a catalog is also read by API threads)."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def report(self, key: str, problem: str | None) -> None:
        """`problem` now holds for `key` (None: it is fine now)."""
        with self._lock:
            previous = self._last.pop(key, None) if problem is None else self._last.get(key)
            if problem is not None:
                self._last[key] = problem
        if problem is None:
            if previous is not None:
                log.info("%s: layout fixed", key)
        elif previous != problem:
            log.warning("%s", problem)
