"""Server keys: bearer scheme, several keys at once (rotation), anything else refused."""

from __future__ import annotations

import pytest

from delivery.httpapi.auth import Auth, authorize
from delivery.secret import new_secret

OLD, NEW = new_secret(), new_secret()


def test_either_key_of_a_rotation_is_accepted() -> None:
    assert authorize(f"Bearer {OLD}", (NEW, OLD)) is Auth.OK
    assert authorize(f"bearer  {NEW} ", (NEW, OLD)) is Auth.OK


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {OLD}", OLD])
def test_missing(header: str | None) -> None:
    assert authorize(header, (NEW, OLD)) is Auth.MISSING


@pytest.mark.parametrize("given", [OLD[:-1], OLD + "x", NEW.upper(), "é" * 40, "x"])
def test_wrong(given: str) -> None:
    assert authorize(f"Bearer {given}", (NEW,)) is Auth.WRONG


def test_no_key_configured_accepts_nothing() -> None:
    assert authorize(f"Bearer {NEW}", ()) is Auth.WRONG
