"""The Rust front's `:predict` row decoder (rust/src/codec/float_rows.rs) against
Python's (`ferry.codecs.float_rows.parse_float_rows`), over generated bodies: wherever
Rust takes a body, Python takes it too, with the same signature name and the same
doubles bit for bit; and the plain bodies clients send are taken by Rust."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.dataplane import extension_function
from support.json_numbers import FINITE, NUMBER_TEXT

from ferry.codecs.float_rows import from_front, parse_float_rows


@pytest.fixture(scope="module")
def rust_parse():
    return extension_function("parse_float_rows")


space = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@st.composite
def bodies(draw) -> bytes:
    rows = draw(st.integers(1, 4))
    width = draw(st.integers(1, 5))
    ragged = draw(st.booleans()) and draw(st.booleans())
    parts = []
    for row in range(rows):
        count = width + (1 if ragged and row == rows - 1 else 0)
        s = draw(space)
        parts.append("[" + f",{s}".join(draw(NUMBER_TEXT) for _ in range(count)) + "]")
    instances = '"instances":' + draw(space) + "[" + ",".join(parts) + "]"
    members = [instances]
    if draw(st.booleans()):
        name = draw(st.sampled_from(["serving_default", "other", "a[b", "esc\\u0061pe"]))
        members.append(f'"signature_name": "{name}"')
    if draw(st.booleans()):
        members.reverse()
    if draw(st.integers(0, 9)) == 0:
        members.append(draw(st.sampled_from(['"inputs": 1', '"instances": [[1]]'])))
    return (draw(space) + "{" + ", ".join(members) + "}" + draw(space)).encode()


def _same(rust, python) -> None:
    assert python is not None, "Rust took a body Python does not"
    rows = from_front(rust)
    assert rows.signature_name == python.signature_name
    assert rows.rows.shape == python.rows.shape
    assert np.array_equal(rows.rows.view(np.uint64), python.rows.view(np.uint64))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies())
def test_rust_takes_only_what_python_takes_with_the_same_doubles(rust_parse, body: bytes) -> None:
    rust = rust_parse(body)
    if rust is not None:
        _same(rust, parse_float_rows(body))


@settings(max_examples=200, deadline=None)
@given(body=bodies(), cut=st.integers(0, 400), junk=st.binary(max_size=3))
def test_damaged_bodies_are_never_taken_wrongly(
    rust_parse, body: bytes, cut: int, junk: bytes
) -> None:
    damaged = body[: cut % (len(body) + 1)] + junk + body[cut % (len(body) + 1) :]
    rust = rust_parse(damaged)
    if rust is not None:
        _same(rust, parse_float_rows(damaged))


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.lists(FINITE, min_size=3, max_size=3), min_size=1, max_size=8),
    dumps=st.sampled_from([json.dumps, lambda o: json.dumps(o, indent=1)]),
)
def test_the_bodies_clients_send_are_taken_by_rust(rust_parse, values, dumps) -> None:
    body = dumps({"instances": values}).encode()
    rust = rust_parse(body)
    assert rust is not None
    _same(rust, parse_float_rows(body))
    assert from_front(rust).rows.tolist() == values
