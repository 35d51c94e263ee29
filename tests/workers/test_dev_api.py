"""The demo page's development-only send endpoint (workers/dev_api.py): the pure decision per
branch, then over HTTP against a running ``delivery up``: it sends as the token's user, refuses
bad tokens, foreign origins and bad input with a clear error, and is off with --no-dev-api."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.up import delivery_up
from workers.dev_api import (
    MAX_BODY_BYTES,
    Preflight,
    Refused,
    SendDirect,
    SendToConversation,
    decide,
    page_origins,
)

ORIGINS = {"http://127.0.0.1:8765"}
OK = {"authorization": "Bearer good"}


def verify(token: str) -> str:
    if token != "good":
        raise ValueError("invalid token")
    return "alice"


def post(body: Any, headers: dict[str, str] | None = None, method: str = "POST",
         path: str = "/v1/messages") -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decide(method, path, OK if headers is None else headers, raw, origins=ORIGINS,
                  verify=verify)


def test_a_group_send_is_from_the_tokens_user() -> None:
    assert post({"conversation": "team", "body": {"text": "hi"}, "client_msg_id": "c1"}) == \
        SendToConversation("alice", "team", {"text": "hi"}, "c1")


def test_a_direct_send_names_the_recipient() -> None:
    assert post({"to": "bob", "body": "yo"}) == SendDirect("alice", "bob", "yo", None)


def test_a_preflight_from_the_page_is_answered() -> None:
    assert post(b"", {"origin": "http://127.0.0.1:8765"}, "OPTIONS") == Preflight()


@pytest.mark.parametrize(("headers", "body", "method", "path", "status"), [
    ({"origin": "http://evil.example", **OK}, {"to": "b", "body": 1}, "POST", "/v1/messages", 403),
    (OK, {"to": "b", "body": 1}, "POST", "/v1/other", 404),
    (OK, {"to": "b", "body": 1}, "GET", "/v1/messages", 405),
    (OK, b"x" * (MAX_BODY_BYTES + 1), "POST", "/v1/messages", 413),
    ({}, {"to": "b", "body": 1}, "POST", "/v1/messages", 401),
    ({"authorization": "Bearer bad"}, {"to": "b", "body": 1}, "POST", "/v1/messages", 401),
    ({"authorization": "Basic good"}, {"to": "b", "body": 1}, "POST", "/v1/messages", 401),
    (OK, b"{not json", "POST", "/v1/messages", 400),
    (OK, [1], "POST", "/v1/messages", 400),
    (OK, {"to": "b"}, "POST", "/v1/messages", 400),
    (OK, {"to": "b", "conversation": "c", "body": 1}, "POST", "/v1/messages", 400),
    (OK, {"body": 1}, "POST", "/v1/messages", 400),
    (OK, {"conversation": 5, "body": 1}, "POST", "/v1/messages", 400),
    (OK, {"to": ["b"], "body": 1}, "POST", "/v1/messages", 400),
    (OK, {"to": "b", "body": 1, "client_msg_id": 7}, "POST", "/v1/messages", 400),
])
def test_refusals(headers: dict[str, str], body: Any, method: str, path: str,
                  status: int) -> None:
    decision = post(body, headers, method, path)
    assert isinstance(decision, Refused) and decision.status == status, decision


def test_page_origins_cover_the_loopback_names() -> None:
    assert page_origins("127.0.0.1", 8765) == {
        "http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"}
    assert page_origins("chat.internal", 80) == {"http://chat.internal:80"}


# -- over HTTP, against `delivery up` -------------------------------------------------------------


def request(url: str, body: Any = None, *, token: str | None = None, method: str = "POST",
            origin: str | None = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if origin is not None:
        req.add_header("Origin", origin)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, dict(err.headers), json.loads(raw) if raw else None


@pytest.mark.slow
def test_over_http_it_sends_as_the_signed_in_user(tmp_path: Path) -> None:
    from delivery.db import make_engine
    from delivery.store import Store

    with delivery_up(tmp_path) as up:
        assert up.api is not None and set(up.links) == {"alice", "bob", "carol"}
        url = up.api + "/v1/messages"
        origin = up.page.rstrip("/")
        status, headers, reply = request(
            url, {"conversation": "demo", "body": {"text": "hi"}, "client_msg_id": "c-1"},
            token=up.token("alice"), origin=origin)
        assert status == 201, reply
        assert reply["conversation"] == "demo"
        assert headers["Access-Control-Allow-Origin"] == origin
        again = request(url, {"conversation": "demo", "body": {"text": "hi"},
                              "client_msg_id": "c-1"}, token=up.token("alice"))
        assert again[0] == 201 and again[2]["id"] == reply["id"]  # stored once
        status, _, direct = request(url, {"to": "bob", "body": "psst"}, token=up.token("carol"))
        assert status == 201 and direct["conversation"] == "dm:bob:carol"

        status, headers, _ = request(url, method="OPTIONS", origin=origin)
        assert status == 204 and "Authorization" in headers["Access-Control-Allow-Headers"]
        assert request(url, {"to": "bob", "body": 1}, token="forged")[0] == 401
        assert request(url, {"to": "bob", "body": 1}, token=up.token("alice"),
                       origin="http://evil.example")[0] == 403
        status, _, err = request(url, {"conversation": "nope", "body": 1},
                                 token=up.token("alice"))
        assert status == 400 and "conversation" in err["error"]
        status, _, err = request(url, {"to": "", "body": 1}, token=up.token("alice"))
        assert status == 400 and "recipient" in err["error"]

        store = Store(make_engine(f"sqlite:///{tmp_path.resolve() / 'delivery.db'}"))
        try:
            group = store.group_message(uuid.UUID(reply["id"]))
            assert group is not None and group["sender"] == "alice"
        finally:
            store.engine.dispose()


@pytest.mark.slow
def test_no_dev_api_starts_no_endpoint(tmp_path: Path) -> None:
    with delivery_up(tmp_path, "--no-dev-api") as up:
        assert up.api is None
        assert "api=" not in up.links["alice"]
