"""The request body's shape: a JSON object, known fields, recipient xor conversation."""

from __future__ import annotations

import json

import pytest

from delivery.httpapi.request import BadRequest, Send, parse_send


def test_a_send() -> None:
    got = parse_send(json.dumps({"sender": "a", "recipient": "b", "body": {"t": 1},
                                 "client_msg_id": "c1", "ttl_s": 60}).encode())
    assert got == Send("a", "b", None, {"t": 1}, "c1", 60)


@pytest.mark.parametrize("raw, error, field", [
    (b"{", "invalid_json", None),
    (b"\xff\xfe", "invalid_json", None),
    (b"[1]", "invalid_json", None),
    (b'{"sender":"a","recipient":"b","body":1,"extra":1}', "unknown_field", "extra"),
    (b'{"recipient":"b","body":1}', "missing_field", "sender"),
    (b'{"sender":"a","recipient":"b"}', "missing_field", "body"),
    (b'{"sender":"a","body":1}', "missing_field", "recipient"),
    (b'{"sender":"a","recipient":"b","conversation":"c","body":1}', "invalid_field",
     "recipient"),
    (b"[" * 100_000, "invalid_field", "body"),
])
def test_bad_shapes_name_the_field(raw: bytes, error: str, field: str | None) -> None:
    got = parse_send(raw)
    assert isinstance(got, BadRequest) and (got.error, got.field) == (error, field)


@pytest.mark.parametrize("raw, field", [
    (b'{"sender":"a","recipient":null,"conversation":"c","body":1}', "recipient"),
    (b'{"sender":"a","recipient":"b","conversation":null,"body":1}', "conversation"),
])
def test_a_null_address_is_refused_not_taken_as_absent(raw: bytes, field: str) -> None:
    got = parse_send(raw)
    assert isinstance(got, BadRequest) and (got.error, got.field) == ("invalid_field", field)


def test_null_optional_fields_mean_the_default() -> None:
    got = parse_send(b'{"sender":"a","recipient":"b","body":1,"client_msg_id":null,'
                     b'"ttl_s":null}')
    assert got == Send("a", "b", None, 1, None, None)
