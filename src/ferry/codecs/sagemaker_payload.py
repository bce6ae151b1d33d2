"""SageMaker `/invocations` payloads (JSON, JSON lines, CSV) as TF Serving request bodies.

The SageMaker TensorFlow Serving container rewrites every payload into a TF Serving
REST body before TF Serving sees it; ferry applies the same rules so that clients
written for that container get the same answers:

- JSON: an object with an `instances`, `inputs` or `examples` key is a TF Serving body
  and passes unchanged; an array of arrays or of objects is the list of instances;
  any other value (a number, a flat array, an object) is one instance. Several JSON
  values, one per line, are JSON lines.
- JSON lines (`application/jsonlines`, or a JSON body holding several values): each
  non-empty line is one instance. (A single line holding a TF Serving body passes
  unchanged, as in the container, since it is also a valid JSON body.)
- CSV: one row is one instance; numbers are parsed (integers stay integers), other
  fields stay strings; a row with one column is a scalar instance, not a list of one.

The dtypes still come from the model's signature, through the TF Serving JSON codec.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ferry.codecs.float_rows import FloatRows
from ferry.codecs.tfserving_json import PredictBody, parse_json
from ferry.errors import InvalidArgument

JSON = "application/json"
JSON_LINES = "application/jsonlines"
# An older spelling the container accepts as JSON lines too.
JSONS = "application/jsons"
CSV = "text/csv"
JSON_TYPES = frozenset({JSON, JSON_LINES, JSONS})
CONTENT_TYPES = frozenset({*JSON_TYPES, CSV})

_TFS_KEYS = ("instances", "inputs", "examples")


def to_predict_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The TF Serving REST body for a payload of one of `CONTENT_TYPES` (a bare media
    type, lower case). Raises InvalidArgument with what is wrong and where."""
    if content_type == CSV:
        return {"instances": csv_instances(body)}
    return json_predict_body(body)


def invocation_body(raw: bytes, content_type: str, rows: FloatRows | None = None) -> PredictBody:
    """A predict payload, read as `:predict` reads its body: a JSON payload of plain
    numeric rows (`{"instances": [[...], ...]}`) is a TF Serving body the container passes
    unchanged, so it takes the same rows path (simdjson's, or the Rust front's `rows`).
    Every other payload goes through `to_predict_body`'s rules; a CSV one never reads as
    rows."""
    return PredictBody(
        raw,
        rows,
        read=lambda body: to_predict_body(body, content_type),
        may_be_rows=content_type in JSON_TYPES,
    )


def json_predict_body(body: bytes) -> dict[str, Any]:
    """JSON or JSON lines, by the container's rules (see the module docstring)."""
    try:
        value = parse_json(body)
    except InvalidArgument as whole_body_error:
        # Not one JSON value: JSON lines, or broken JSON (then report the JSON error,
        # which is what a client sending one value needs to see).
        if body.count(b"\n") == 0 and body.count(b"\r") == 0:
            raise
        try:
            return {"instances": json_lines_instances(body)}
        except InvalidArgument:
            raise whole_body_error from None
    if isinstance(value, dict) and any(key in value for key in _TFS_KEYS):
        return value
    if isinstance(value, list) and value and all(isinstance(v, list | dict) for v in value):
        return {"instances": value}
    return {"instances": [value]}


def json_lines_instances(body: bytes) -> list[Any]:
    """One instance per non-empty line; a line that is not JSON is an error naming it."""
    instances = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append(parse_json(line))
        except InvalidArgument as exc:
            raise InvalidArgument(f"JSON lines: line {number}: {exc.message}") from None
    if not instances:
        raise InvalidArgument("JSON lines: the request body holds no JSON values")
    return instances


def csv_instances(body: bytes) -> list[Any]:
    """Rows of a header-less CSV body as instances; all rows must have as many columns."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"CSV: the request body is not UTF-8: {exc}") from None
    # strict: an unterminated or misplaced quote is an error, not silently data.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise InvalidArgument(f"CSV: line {reader.line_num}: {exc}") from None
    if not rows:
        raise InvalidArgument("CSV: the request body holds no rows")
    width = len(rows[0])
    instances: list[Any] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise InvalidArgument(
                f"CSV: row {number} has {len(row)} columns but row 1 has {width}; "
                "every row must have the same number of columns"
            )
        values = [_csv_value(field, number, column) for column, field in enumerate(row, 1)]
        instances.append(values[0] if width == 1 else values)
    return instances


def _csv_value(field: str, row: int, column: int) -> int | float | str:
    """A number when the field reads as one, otherwise the string itself."""
    text = field.strip()
    if not text:
        raise InvalidArgument(f"CSV: row {row}, column {column} is empty")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return field
