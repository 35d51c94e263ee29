"""Pure parts of the push path: backoff, Retry-After parsing, error classification, preview."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from firebase_admin import exceptions as fb_exceptions
from hypothesis import given
from hypothesis import strategies as st

from delivery.push.fcm import classify, parse_retry_after
from delivery.push.service import BACKOFF_CAP_S, preview, retry_countdown
from delivery.push.stub import FCM_ERROR_TYPE, FCM_ERRORS


@given(
    retries=st.integers(0, 100),
    retry_after=st.none() | st.floats(0, 10_000),
    base=st.floats(0.01, 5),
    seed=st.integers(0, 2**32),
)
def test_countdown_bounds(retries: int, retry_after: float | None, base: float, seed: int) -> None:
    c = retry_countdown(retries, retry_after, base_s=base, rng=random.Random(seed))
    assert 0 < c <= BACKOFF_CAP_S
    if retry_after is not None:
        assert c >= min(retry_after, BACKOFF_CAP_S)
    assert c >= min(base * 2**retries * 0.5, BACKOFF_CAP_S)
    assert c <= max(base * 2**retries, retry_after or 0)


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> Exception:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.headers.update(headers or {})
    return fb_exceptions.FirebaseError("UNKNOWN", "boom", http_response=resp)


@pytest.mark.parametrize(
    ("code", "kind"),
    [("UNREGISTERED", "invalid"), ("SENDER_ID_MISMATCH", "invalid"),
     ("INVALID_ARGUMENT", "invalid"), ("QUOTA_EXCEEDED", "transient"),
     ("UNAVAILABLE", "transient"), ("INTERNAL", "transient"),
     ("THIRD_PARTY_AUTH_ERROR", "failed")],
)
def test_classify_fcm_codes(code: str, kind: str) -> None:
    status, canonical = FCM_ERRORS[code]
    body = {"error": {"code": status, "status": canonical, "message": "x",
                      "details": [{"@type": FCM_ERROR_TYPE, "errorCode": code}]}}
    r = classify("t", _error(status, body, {"Retry-After": "7"}))
    assert (r.kind, r.code, r.retry_after) == (kind, code, 7.0)


@pytest.mark.parametrize(
    ("status", "kind"), [(404, "invalid"), (400, "invalid"), (429, "transient"),
                         (500, "transient"), (502, "transient"), (503, "transient"),
                         (401, "failed"), (403, "failed")],
)
def test_classify_by_http_status_without_details(status: int, kind: str) -> None:
    assert classify("t", _error(status, {"oops": True})).kind == kind


def test_classify_connection_error_is_transient() -> None:
    exc = fb_exceptions.UnavailableError("Failed to establish a connection", cause=None)
    r = classify("t", exc)
    assert (r.kind, r.code, r.retry_after) == ("transient", "UNAVAILABLE", None)


def test_preview() -> None:
    assert preview("hi  there\nyou") == "hi there you"
    assert preview({"text": "a" * 150}) == "a" * 99 + "\u2026"
    assert preview({"image": "x.png"}) == '{"image":"x.png"}'
    assert len(preview(list(range(1000)))) == 100
