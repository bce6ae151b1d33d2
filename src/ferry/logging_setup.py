"""How `ferry serve` writes its log: text or one JSON object per line, each line with the
id of the request it was written for.

Why a request id in every line: a failed request's lines (its decode error, the model's
warning, the access line) are scattered between those of concurrent requests; with the
id a reader (or a log pipeline) gathers them. The id lives in a context variable, set by
the HTTP and gRPC front (ferry.protocols.request_log) for the task that serves the
request, so every line logged in that task carries it without being passed around.
Lines written by batch worker threads serve several requests at once and carry none.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

LOG_FORMATS = ("text", "json")
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_METADATA = "x-request-id"
# A client's id is echoed into logs and headers: printable token characters only, and
# short, so it can neither forge log lines nor grow them. Others are replaced.
MAX_REQUEST_ID_LENGTH = 128
_ACCEPTED_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")

# The id of the request being served by the current task (None outside requests).
request_id: ContextVar[str | None] = ContextVar("ferry_request_id", default=None)

# LogRecord attributes that are not "extra" fields given by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}
# uvicorn passes its colored copy of the message as an extra field.
_STANDARD.add("color_message")


# Fresh ids: a random prefix per process and a counter, 16 hex digits together. Unique
# within the process and, by the prefix, across replicas; and cheaper than 8 random
# bytes per request (a system call each: measured about 1 µs).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A fresh id: 16 hex digits (more after 2**32 requests)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def accepted_request_id(value: bytes | str | None) -> str:
    """The client's id when it is acceptable, else a fresh one."""
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if value and _ACCEPTED_ID.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request's id (`record.request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """ferry's classic line, with `[request id]` after the logger name when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid is None:
            return text
        head = f"{record.name}: "
        at = text.find(head)
        return text if at < 0 else f"{text[:at]}{record.name} [{rid}]: {text[at + len(head) :]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id
    when set, the caller's `extra` fields (the access log's method, path, status...), and
    the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send the root logger's records to stderr in `log_format` ("text" or "json")."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
