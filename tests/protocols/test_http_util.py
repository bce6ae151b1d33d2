"""`answer_post`, the one error boundary of the REST POST handlers (TF Serving, V2,
SageMaker): a result is sent as 200, a FerryError in the protocol's form, a bug as an
internal error that costs one request, and a client that left gets nothing."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from ferry.errors import InvalidArgument
from ferry.protocols.http_util import Answer, ClientDisconnected, RequestTooLarge, answer_post
from ferry.protocols.rest_answers import error_parts

SCOPE = {"type": "http", "method": "POST", "path": "/v1/models/m:predict", "headers": []}


def answered(produce: Answer | Exception) -> list[dict]:
    """The ASGI messages answer_post sends for a handler that returns or raises `produce`."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def handler() -> Answer:
        if isinstance(produce, Exception):
            raise produce
        return produce

    asyncio.run(answer_post(SCOPE, send, handler(), error_parts))
    return sent


def test_a_result_is_sent_with_its_content_type_and_headers() -> None:
    start, body = answered((b"\x01\x02", b"application/octet-stream", [(b"x-a", b"1")]))
    assert start["status"] == 200
    assert (b"content-type", b"application/octet-stream") in start["headers"]
    assert (b"content-length", b"2") in start["headers"]
    assert (b"x-a", b"1") in start["headers"]
    assert body["body"] == b"\x01\x02"


def test_a_ferry_error_takes_the_protocols_form() -> None:
    start, body = answered(InvalidArgument("bad input"))
    assert start["status"] == 400
    assert (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body["body"]) == {"error": "bad input"}


def test_a_bug_costs_one_request_as_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        start, body = answered(KeyError("oops"))
    assert start["status"] == 500
    assert json.loads(body["body"]) == {"error": "Internal error: KeyError: 'oops'"}
    assert "unexpected error serving POST /v1/models/m:predict" in caplog.text


def test_a_client_that_left_gets_nothing() -> None:
    assert answered(ClientDisconnected()) == []


def test_a_body_over_the_limit_is_refused_and_the_connection_closed() -> None:
    start, body = answered(RequestTooLarge("Request body of 9 bytes is over the limit"))
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]  # its unread rest is still coming
    assert json.loads(body["body"]) == {"error": "Request body of 9 bytes is over the limit"}
