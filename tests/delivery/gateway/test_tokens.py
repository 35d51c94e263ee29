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
from delivery.secret import new_secret
from delivery.settings import reset_settings
from workers.devkit.procs import ROOT

S = new_secret()
CLI_SECRET = new_secret()


def test_round_trip_and_expiry() -> None:
    tok = issue_token("bob", S, 60, now=1000.0)
    assert verify_token(tok, S, now=1059.0) == "bob"
    with pytest.raises(ExpiredToken, match="token expired"):
        verify_token(tok, S, now=1060.0)


@pytest.mark.parametrize("bad", ["", None])
def test_missing(bad: str | None) -> None:
    with pytest.raises(MissingToken):
        verify_token(bad, S)


def test_forged_and_wrong_secret_and_garbage() -> None:
    tok = issue_token("bob", S, 60)
    payload, _, sig = tok.rpartition(".")
    forged_user = issue_token("mallory", S, 60).rpartition(".")[0]
    for bad in (payload + "." + sig[::-1], forged_user + "." + sig, "x" * 40, 42, ["a"],
                "a" * 5000):
        with pytest.raises(InvalidToken):
            verify_token(bad, S)
    with pytest.raises(InvalidToken):
        verify_token(tok, new_secret())


def test_issue_validates() -> None:
    with pytest.raises(ValueError):
        issue_token("", S, 60)
    with pytest.raises(ValueError):
        issue_token("bob", S, 0)
    with pytest.raises(ValueError):
        issue_token("bob", "", 60)


def test_token_command_in_process(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DELIVERY_SECRET", CLI_SECRET)
    reset_settings()
    try:
        assert token_main(["carol", "--ttl", "30"]) == 0
    finally:
        reset_settings()
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert verify_token(out.strip(), CLI_SECRET) == "carol"


def test_delivery_token_command() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_SECRET"] = CLI_SECRET
    out = subprocess.run([sys.executable, "-m", "workers.cli", "token", "dave"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert verify_token(out.stdout.strip(), CLI_SECRET) == "dave"
    assert out.stdout.strip().count("\n") == 0


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), -1.0, 0.0, 1e308, 367 * 86400.0])
def test_non_finite_negative_or_huge_ttl_is_refused(ttl: float) -> None:
    """Fault: ``delivery token --ttl inf`` issued a token with ``"exp": Infinity``."""
    with pytest.raises(ValueError, match="ttl_s"):
        issue_token("bob", S, ttl)


def test_a_token_that_says_it_never_expires_is_refused() -> None:
    from itsdangerous import URLSafeSerializer

    from delivery.gateway.tokens import SALT

    forever = URLSafeSerializer(S, salt=SALT).dumps({"u": "bob", "exp": float("inf")})
    with pytest.raises(InvalidToken):
        verify_token(forever, S)


@pytest.mark.parametrize("ttl", ["inf", "nan", "-5", "Infinity", "0", "1e308"])
def test_token_command_refuses_bad_ttl(ttl: str, tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env.update(DELIVERY_SECRET=CLI_SECRET, DELIVERY_DATA_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "workers.cli", "token", "dave", "--ttl", ttl],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "ttl" in res.stderr, res.stderr
