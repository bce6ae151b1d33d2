"""Version labels from the store: a model's `version_labels.json`, read on every poll.

Why a file in the store: N replicas polling one folder or bucket load a new version at
different times, so traffic that follows "latest" moves replica by replica. Clients that
ask for a label (`/v1/models/m/labels/stable:predict`, gRPC `version_label`) move only
when the label moves, and the label file lives where the versions live, so one upload
moves it on every replica (within one poll, or at once with S3 events). The operator
moves it after every replica reports the new version AVAILABLE (docs/rollouts.md).

The file is a JSON object of label to version, `{"stable": 3, "canary": 4}`: one line
that any script, `jq` or `aws s3 cp -` writes, with nothing to learn. (TF Serving's text
format would need its whole `model_config_list` around two map entries.) Named
`version_labels.json`, TF Serving's field name, so it is not taken for one of Triton's
class-label files (`*.txt`, model_files.py).

Rules (docs/rollouts.md):

* precedence: a model with a label file gets exactly the file's labels; the config file's
  `version_labels` apply to it only while it has none (removing the file restores them);
* a file that cannot be read, is larger than `--max_version_labels_file_bytes` (checked
  before it is read or downloaded), or does not parse is logged once and refused: the
  previous labels stay in force;
* whether a label may point at a version that is not AVAILABLE on this replica is the
  manager's rule (ModelManager, TF Serving's), the same for labels from either place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass

from ferry.model_config import ModelSpec
from ferry.repository.source import ModelFileTooLarge, VersionSource
from ferry.tfserving_messages import MAX_VERSION

log = logging.getLogger(__name__)

VERSION_LABELS_FILE = "version_labels.json"
# A few hundred labels fit in 64 KiB; the bound is `--max_version_labels_file_bytes`.
DEFAULT_MAX_VERSION_LABELS_FILE_BYTES = 65536
# A label names a URL path segment (`/labels/{l}`): letters, digits, `.`, `_`, `-`.
LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What a refused file's content is remembered as: equal to no file's content, so the next
# poll reads and judges the file again.
_REFUSED = object()


class VersionLabelsError(ValueError):
    """A label file that is refused; the message says why (for the log)."""


def parse_version_labels(content: bytes) -> dict[str, int]:
    """The labels of a label file's bytes; raises VersionLabelsError saying what is wrong.

    The caller has bounded `content`; JSON nested deeper than Python's recursion limit is
    refused like any other malformed file."""
    try:
        document = json.loads(content.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise VersionLabelsError(f"not UTF-8 text: {exc}") from None
    except VersionLabelsError:  # from _unique_keys
        raise
    except (ValueError, RecursionError) as exc:
        raise VersionLabelsError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise VersionLabelsError(
            'must be a JSON object of label to version, e.g. {"stable": 3, "canary": 4}'
        )
    for label, version in document.items():
        if not LABEL_NAME.fullmatch(label):
            raise VersionLabelsError(
                f"label {label!r}: a label is 1 to 128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        # bool is an int in Python; `true` is not a version.
        if isinstance(version, bool) or not isinstance(version, int):
            raise VersionLabelsError(f"label {label!r}: the version must be an integer")
        if not 0 <= version <= MAX_VERSION:
            raise VersionLabelsError(f"label {label!r}: version {version} is out of range")
    return document


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json's object hook: a label given twice is a mistake, not "the last one wins"."""
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise VersionLabelsError(f"label {key!r} is given twice")
        found[key] = value
    return found


@dataclass
class _Reading:
    """What a model's label file held at the last poll, and the labels in force from it."""

    content: object = None  # the file's bytes; None: no file; _REFUSED
    labels: dict[str, int] | None = None  # None: no file read yet, the config's apply
    refused: str = ""  # the last refusal logged, so each is logged once


class VersionLabelFiles:
    """Every model's label file, read on every poll. Used from the watcher thread only.

    Keeps, per model, the labels of the last file that was accepted, so a refused file
    (unreadable, too large, malformed) leaves them in force until a good one arrives."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_VERSION_LABELS_FILE_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("--max_version_labels_file_bytes must be at least 1")
        self.max_bytes = max_bytes
        self._readings: dict[str, _Reading] = {}

    def applied(self, spec: ModelSpec, source: VersionSource) -> ModelSpec:
        """`spec` with the labels wanted now: its label file's when it has one (read from
        `source` now), else its config's. Never raises: a refusal is logged."""
        labels = self.read(spec.name, source)
        if labels is None or labels == spec.labels:
            return spec
        return dataclasses.replace(spec, labels=labels)

    def read(self, name: str, source: VersionSource) -> dict[str, int] | None:
        """The labels model `name`'s file sets now; None while it has none."""
        reading = self._readings.setdefault(name, _Reading())
        try:
            content = source.read_model_file(VERSION_LABELS_FILE, self.max_bytes)
        except ModelFileTooLarge as exc:
            self._refuse(name, reading, f"{exc.size} bytes, more than {self.max_bytes}")
            return reading.labels
        except Exception as exc:  # storage down, permissions: the labels in force stay
            self._refuse(name, reading, f"cannot be read: {exc}")
            return reading.labels
        if content == reading.content:
            return reading.labels
        reading.content = content
        if content is None:
            if reading.labels is not None:
                log.info(
                    "model %s: %s removed; the config's version labels apply",
                    name,
                    VERSION_LABELS_FILE,
                )
            reading.labels, reading.refused = None, ""
            return None
        try:
            labels = parse_version_labels(content)
        except VersionLabelsError as exc:
            self._refuse(name, reading, str(exc))
            return reading.labels
        reading.labels, reading.refused = labels, ""
        log.info("model %s: version labels from %s: %s", name, VERSION_LABELS_FILE, labels)
        return labels

    def forget(self, name: str) -> None:
        """The model is no longer configured."""
        self._readings.pop(name, None)

    def _refuse(self, name: str, reading: _Reading, why: str) -> None:
        if why != reading.refused:
            kept = reading.labels if reading.labels is not None else "the config's"
            log.error(
                "model %s: %s refused, keeping the labels in force (%s): %s",
                name,
                VERSION_LABELS_FILE,
                kept,
                why,
            )
            reading.refused = why
        reading.content = _REFUSED
