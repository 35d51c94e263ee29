"""Gateway tokens: issue/verify, forgery, expiry, and the ``delivery token`` command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from delivery.gateway import (
    ExpiredToken,
    InvalidToken,
    MissingToken,
    issue_token,
    verify_token,
)
from delivery.gateway.cli import token_main
from delivery.settings import reset_settings
from tests.support.procs import ROOT


def test_round_trip_and_expiry() -> None:
    tok = issue_token("bob", "s3cret", 60, now=1000.0)
    assert verify_token(tok, "s3cret", now=1059.0) == "bob"
    with pytest.raises(ExpiredToken, match="token expired"):
        verify_token(tok, "s3cret", now=1060.0)


@pytest.mark.parametrize("bad", ["", None])
def test_missing(bad: str | None) -> None:
    with pytest.raises(MissingToken):
        verify_token(bad, "s3cret")


def test_forged_and_wrong_secret_and_garbage() -> None:
    tok = issue_token("bob", "s3cret", 60)
    payload, _, sig = tok.rpartition(".")
    forged_user = issue_token("mallory", "s3cret", 60).rpartition(".")[0]
    for bad in (payload + "." + sig[::-1], forged_user + "." + sig, "x" * 40, 42, ["a"],
                "a" * 5000):
        with pytest.raises(InvalidToken):
            verify_token(bad, "s3cret")
    with pytest.raises(InvalidToken):
        verify_token(tok, "other")


def test_issue_validates() -> None:
    with pytest.raises(ValueError):
        issue_token("", "s", 60)
    with pytest.raises(ValueError):
        issue_token("bob", "s", 0)
    with pytest.raises(ValueError):
        issue_token("bob", "", 60)


def test_token_command_in_process(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DELIVERY_SECRET", "cli-secret")
    reset_settings()
    try:
        assert token_main(["carol", "--ttl", "30"]) == 0
    finally:
        reset_settings()
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert verify_token(out.strip(), "cli-secret") == "carol"


def test_delivery_token_command() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_SECRET"] = "cli-secret"
    out = subprocess.run([sys.executable, "-m", "workers.cli", "token", "dave"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert verify_token(out.stdout.strip(), "cli-secret") == "dave"
    assert out.stdout.strip().count("\n") == 0
