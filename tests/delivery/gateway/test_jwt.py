"""JWT gateway tokens as a foreign backend mints them: HS256/RS256/ES256, rotation by kid,
expiry and leeway, audience/issuer, algorithm confusion, the legacy format, bad settings."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from delivery.gateway.tokens import (
    SALT,
    ExpiredToken,
    InvalidToken,
    Keyring,
    TokenError,
    issue_token,
    keyring_for,
    verify_claims,
    verify_token,
)
from delivery.secret import new_secret
from delivery.settings import Settings, SettingsError
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run

SECRET = new_secret()
OLD, NEW = new_secret(), new_secret()
NOW = 1_800_000_000.0


def settings(**env: str) -> Settings:
    return Settings.from_env({"DELIVERY_SECRET": SECRET, **env})


def pem(public: Any) -> bytes:
    data: bytes = public.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def ring(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
         ec_key: ec.EllipticCurvePrivateKey) -> Keyring:
    (tmp_path / "r.pem").write_bytes(pem(rsa_key.public_key()))
    (tmp_path / "e.pem").write_bytes(pem(ec_key.public_key()))
    keys = (f"new=hs256:{NEW},old=hs256:{OLD},"
            f"r=rs256:{tmp_path / 'r.pem'},e=es256:{tmp_path / 'e.pem'}")
    return keyring_for(settings(DELIVERY_TOKEN_KEYS=keys))


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "bob", "exp": int(NOW) + 60, **extra}


def test_hs256_minted_by_a_foreign_backend_without_kid_uses_delivery_secret() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verify_claims(token, keyring_for(settings()), now=NOW) == ("bob", NOW + 60 + 10)


def test_hs256_by_hand_as_node_or_go_would_mint_it() -> None:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert verify_token(f"{head}.{body}.{sig}", SECRET, now=NOW) == "bob"


def test_rotation_selects_the_key_by_kid(ring: Keyring) -> None:
    for kid, key in (("old", OLD), ("new", NEW)):
        token = jwt.encode(claims(), key, algorithm="HS256", headers={"kid": kid})
        assert verify_token(token, ring, now=NOW) == "bob"
    wrong = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "new"})
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(wrong, ring, now=NOW)
    unknown = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "gone"})
    with pytest.raises(InvalidToken, match="kid"):
        verify_token(unknown, ring, now=NOW)


def test_issue_signs_with_the_newest_hmac_key(ring: Keyring) -> None:
    token = issue_token("carol", ring, 60, now=NOW)
    assert jwt.get_unverified_header(token)["kid"] == "new"
    assert jwt.decode(token, NEW, algorithms=["HS256"],
                      options={"verify_iat": False})["sub"] == "carol"


def test_rs256_and_es256_with_public_keys(ring: Keyring, rsa_key: rsa.RSAPrivateKey,
                                          ec_key: ec.EllipticCurvePrivateKey) -> None:
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r"})
    es = jwt.encode(claims(sub="dana"), ec_key, algorithm="ES256", headers={"kid": "e"})
    assert verify_token(rs, ring, now=NOW) == "bob"
    assert verify_token(es, ring, now=NOW) == "dana"
    swapped = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "r"})
    with pytest.raises(InvalidToken, match="RS256"):
        verify_token(swapped, ring, now=NOW)


def test_alg_none_is_never_accepted(ring: Keyring) -> None:
    for kid in (None, "r", "new"):
        token = jwt.encode(claims(), None, algorithm="none",
                           headers={"kid": kid} if kid else None)
        with pytest.raises(InvalidToken):
            verify_token(token, ring, now=NOW)


def test_hmac_keyed_with_the_public_key_is_refused(ring: Keyring,
                                                   rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic confusion: HS256 signed with the RSA public key's PEM as the secret."""
    public = pem(rsa_key.public_key())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    for kid in ("r", None):
        header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
        head, body = b64(json.dumps(header).encode()), b64(json.dumps(claims()).encode())
        sig = b64(hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest())
        with pytest.raises(InvalidToken):
            verify_token(f"{head}.{body}.{sig}", ring, now=NOW)


def test_other_hmac_algorithms_are_refused(ring: Keyring) -> None:
    token = jwt.encode(claims(), NEW, algorithm="HS512", headers={"kid": "new"})
    with pytest.raises(InvalidToken, match="HS256"):
        verify_token(token, ring, now=NOW)


def test_expiry_with_clock_skew_leeway() -> None:
    ring = keyring_for(settings(DELIVERY_TOKEN_LEEWAY_S="10"))
    token = jwt.encode({"sub": "bob", "exp": int(NOW)}, SECRET, algorithm="HS256")
    assert verify_claims(token, ring, now=NOW + 9.9).exp == NOW + 10
    with pytest.raises(ExpiredToken):
        verify_token(token, ring, now=NOW + 10)
    later = jwt.encode(claims(nbf=int(NOW) + 30), SECRET, algorithm="HS256")
    assert verify_token(later, ring, now=NOW + 20) == "bob"  # within the leeway
    with pytest.raises(InvalidToken, match="nbf"):
        verify_token(later, ring, now=NOW + 19)


@pytest.mark.parametrize("payload", [
    {"exp": int(NOW) + 60},  # no sub
    {"sub": "bob"},  # no exp
    {"sub": "", "exp": int(NOW) + 60},
    {"sub": 7, "exp": int(NOW) + 60},
    {"sub": "b\x00b", "exp": int(NOW) + 60},
    {"sub": "b" * 129, "exp": int(NOW) + 60},
    {"sub": "bob", "exp": "tomorrow"},
    {"sub": "bob", "exp": True},
])
def test_malformed_claims_are_refused(payload: dict[str, Any]) -> None:
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify_token(token, SECRET, now=NOW)


def test_audience_and_issuer() -> None:
    ring = keyring_for(settings(DELIVERY_TOKEN_AUDIENCE="chat", DELIVERY_TOKEN_ISSUER="backend"))
    good = jwt.encode(claims(aud="chat", iss="backend"), SECRET, algorithm="HS256")
    assert verify_token(good, ring, now=NOW) == "bob"
    for bad in (claims(), claims(aud="chat"), claims(aud="other", iss="backend"),
                claims(aud="chat", iss="evil")):
        with pytest.raises(InvalidToken):
            verify_token(jwt.encode(bad, SECRET, algorithm="HS256"), ring, now=NOW)
    # Without an audience configured, a token meant for some other audience is refused.
    with pytest.raises(InvalidToken):
        verify_token(good, keyring_for(settings()), now=NOW)
    minted = issue_token("bob", ring, 60, now=NOW)
    assert verify_token(minted, ring, now=NOW) == "bob"


def test_legacy_tokens_accepted_only_while_enabled() -> None:
    from itsdangerous import URLSafeSerializer

    from delivery.gateway.tokens import SALT

    legacy = URLSafeSerializer(SECRET, salt=SALT).dumps({"u": "bob", "exp": NOW + 60})
    assert verify_token(legacy, keyring_for(settings()), now=NOW) == "bob"
    with pytest.raises(InvalidToken):
        verify_token(legacy, keyring_for(settings(DELIVERY_TOKEN_LEGACY="0")), now=NOW)


@given(st.text(max_size=300))
def test_any_string_is_a_token_error_never_a_crash(text: str) -> None:
    with contextlib.suppress(TokenError):
        verify_token(text, SECRET, now=NOW)


@pytest.mark.parametrize("entry, match", [
    ("k=hs256:short", "DELIVERY_TOKEN_KEYS.*32 bytes"),
    (f"k=hs256:{NEW},k=hs256:{OLD}", "twice"),
    (f"k=hs384:{NEW}", "algorithm"),
    (f"k:{NEW}", "KID=hs256"),
    (f"bad kid=hs256:{NEW}", "kid"),
    ("k=rs256:/nonexistent/key.pem", "cannot read"),
])
def test_bad_token_keys_are_one_line_naming_the_variable(entry: str, match: str) -> None:
    with pytest.raises(SettingsError, match=match) as info:
        settings(DELIVERY_TOKEN_KEYS=entry)
    assert "DELIVERY_TOKEN_KEYS" in str(info.value) and "\n" not in str(info.value)
    assert NEW not in str(info.value) and OLD not in str(info.value)


def test_wrong_public_key_files_are_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                            ec_key: ec.EllipticCurvePrivateKey) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    small = tmp_path / "small.pem"
    small.write_bytes(pem(rsa.generate_private_key(65537, 1024).public_key()))
    ecpem = tmp_path / "ec.pem"
    ecpem.write_bytes(pem(ec_key.public_key()))
    rsapem = tmp_path / "rsa.pem"
    rsapem.write_bytes(pem(rsa_key.public_key()))
    for entry, match in ((f"k=rs256:{private}", "not a PEM public key"),
                         (f"k=rs256:{small}", "1024 bits"),
                         (f"k=rs256:{ecpem}", "RSA public key"),
                         (f"k=es256:{rsapem}", "P-256")):
        with pytest.raises(SettingsError, match=match):
            settings(DELIVERY_TOKEN_KEYS=entry)


@pytest.mark.parametrize("env, var", [
    ({"DELIVERY_TOKEN_LEEWAY_S": "-1"}, "DELIVERY_TOKEN_LEEWAY_S"),
    ({"DELIVERY_TOKEN_LEEWAY_S": "3600"}, "DELIVERY_TOKEN_LEEWAY_S"),
    ({"DELIVERY_TOKEN_LEGACY": "2"}, "DELIVERY_TOKEN_LEGACY"),
    ({"DELIVERY_API_KEYS": f"{NEW},test-secret"}, "DELIVERY_API_KEYS"),
])
def test_bad_token_and_api_settings(env: dict[str, str], var: str) -> None:
    with pytest.raises(SettingsError, match=var):
        settings(**env)


def test_a_gateway_admits_rs256_by_kid_and_closes_on_confusion(
        sqlite_store: Store, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """On a real socket: the hello of an RS256 token (kid, aud) is welcomed as its ``sub``;
    ``alg: none``, a missing audience and a legacy token (legacy off) close with 1008."""
    (tmp_path / "r.pem").write_bytes(pem(rsa_key.public_key()))
    gw_settings = Settings(secret=SECRET, token_keys=f"r=rs256:{tmp_path / 'r.pem'}",
                           token_audience="chat", token_legacy=0)
    now = int(time.time())
    good = jwt.encode({"sub": "zoe", "exp": now + 60, "aud": "chat"}, rsa_key,
                      algorithm="RS256", headers={"kid": "r"})
    bad = [jwt.encode({"sub": "zoe", "exp": now + 60, "aud": "chat"}, None, algorithm="none",
                      headers={"kid": "r"}),
           jwt.encode({"sub": "zoe", "exp": now + 60}, rsa_key, algorithm="RS256",
                      headers={"kid": "r"}),
           URLSafeSerializer(SECRET, salt=SALT).dumps({"u": "zoe", "exp": now + 60})]

    async def hello(h: Any, token: str) -> tuple[dict[str, Any] | None, int | None, str]:
        ws = await connect(h.url, compression=None)
        await ws.send(json.dumps({"type": "hello", "token": token}))
        try:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed:
            return None, ws.close_code, ws.close_reason or ""
        await ws.close()
        return frame, None, ""

    async def main() -> None:
        async with gateway_harness(sqlite_store, settings=gw_settings) as h:
            frame, _, _ = await hello(h, good)
            assert frame is not None and (frame["type"], frame["user"]) == ("welcome", "zoe")
            for token in bad:
                frame, code, reason = await hello(h, token)
                assert (frame, code, reason) == (None, 1008, "invalid token")

    run(main())


def test_token_command_signs_with_the_newest_key_and_audience(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from delivery.gateway.cli import token_main
    from delivery.settings import reset_settings

    monkeypatch.setenv("DELIVERY_SECRET", SECRET)
    monkeypatch.setenv("DELIVERY_TOKEN_KEYS", f"new=hs256:{NEW},old=hs256:{OLD}")
    monkeypatch.setenv("DELIVERY_TOKEN_AUDIENCE", "chat")
    reset_settings()
    try:
        assert token_main(["carol", "--ttl", "30"]) == 0
    finally:
        reset_settings()
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == "new"
    claims = jwt.decode(token, NEW, algorithms=["HS256"], audience="chat")
    assert claims["sub"] == "carol" and claims["exp"] - claims["iat"] in (30, 31)
