"""Gateway tokens: JWTs any backend can mint (PyJWT), checked against a keyring.

A token is what a client puts in its ``hello`` frame. The chat backend (which authenticated the
user) mints it with any JWT library, or with :func:`issue_token` / ``delivery token USER``:
header ``alg`` HS256, RS256 or ES256 and optional ``kid``; claims ``sub`` (the user id) and
``exp`` (required), ``aud`` / ``iss`` (required to match when DELIVERY_TOKEN_AUDIENCE /
DELIVERY_TOKEN_ISSUER are set), ``nbf`` and ``iat`` optional. A token without ``kid`` is checked
with DELIVERY_SECRET (HS256); one with a ``kid`` with that key of DELIVERY_TOKEN_KEYS, each key
bound to one algorithm (docs/protocol.md "Tokens", docs/security.md).

The itsdangerous tokens of release 0.1 (``{"u", "exp"}`` signed with DELIVERY_SECRET) are still
accepted for one release while DELIVERY_TOKEN_LEGACY=1 (the default), so clients holding one
are not logged out by the upgrade; nothing issues them any more.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jwt
from itsdangerous import BadSignature, URLSafeSerializer

from delivery.secret import check_secret
from delivery.settings import MAX_TOKEN_TTL_S, Settings
from delivery.token_keys import TokenKey, parse_token_keys

SALT = "delivery.gateway.token.v1"  # the legacy itsdangerous format's
MAX_USER_LEN = 128
MAX_TOKEN_LEN = 8192  # an RS256 JWT with a few claims is ~600 characters
_BAD_USER_CHAR = re.compile("[\x00-\x1f\x7f-\x9f]")


class TokenError(ValueError):
    """The token cannot be accepted; ``reason`` is a short text for the close frame."""

    reason = "invalid token"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.reason)


class MissingToken(TokenError):
    reason = "missing token"


class InvalidToken(TokenError):
    reason = "invalid token"


class ExpiredToken(TokenError):
    reason = "token expired"


class Claims(NamedTuple):
    user: str
    exp: float  # UNIX seconds the session ends (the token's exp + leeway; docs/protocol.md)


@dataclass(frozen=True)
class Keyring:
    """What a gateway accepts: keys by ``kid`` (None: tokens without one), the expected
    audience and issuer, the clock-skew leeway, and the legacy secret (None: refused)."""

    keys: Mapping[str | None, TokenKey]
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0
    legacy_secret: str | None = None
    signing: TokenKey | None = field(default=None)

    @classmethod
    def from_secret(cls, secret: str, *, leeway_s: float = 0.0) -> Keyring:
        """DELIVERY_SECRET alone: HS256 tokens without ``kid``, and the legacy format."""
        check_secret(secret)  # a weak or published secret verifies nothing (WeakSecret)
        key = TokenKey(None, "HS256", secret)
        return cls({None: key}, leeway_s=leeway_s, legacy_secret=secret, signing=key)


_rings: dict[tuple[Any, ...], Keyring] = {}


def keyring_for(settings: Settings) -> Keyring:
    """The keyring these settings describe (built once per distinct configuration: the
    gateway asks on every hello)."""
    secret = settings.effective_secret
    ident = (secret, settings.token_keys, settings.token_audience, settings.token_issuer,
             settings.token_leeway_s, settings.token_legacy)
    ring = _rings.get(ident)
    if ring is None:
        base = TokenKey(None, "HS256", secret)
        extra = parse_token_keys(settings.token_keys)
        keys: dict[str | None, TokenKey] = {None: base, **{k.kid: k for k in extra}}
        # Newest first: the first listed HMAC key signs; DELIVERY_SECRET when there is none.
        signing = next((k for k in extra if k.can_sign), base)
        ring = Keyring(keys, settings.token_audience or None, settings.token_issuer or None,
                       settings.token_leeway_s, secret if settings.token_legacy else None,
                       signing)
        if len(_rings) > 16:
            _rings.clear()
        _rings[ident] = ring
    return ring


def _ring(keys: str | Keyring) -> Keyring:
    return keys if isinstance(keys, Keyring) else Keyring.from_secret(keys)


def issue_token(user: str, secret: str | Keyring, ttl_s: float, *, now: float | None = None,
                audience: str | None = None, issuer: str | None = None) -> str:
    """An HS256 JWT for ``user`` that expires ``ttl_s`` seconds from now, signed with
    ``secret`` (no ``kid``) or the keyring's signing key (its ``kid`` in the header)."""
    if (not isinstance(user, str) or not user or len(user) > MAX_USER_LEN
            or _BAD_USER_CHAR.search(user)):
        raise ValueError(f"user must be a non-empty string of at most {MAX_USER_LEN} "
                         "characters without control characters")
    if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s)
            and 0 < ttl_s <= MAX_TOKEN_TTL_S):
        raise ValueError(f"ttl_s must be a number in (0, {MAX_TOKEN_TTL_S:g}] seconds, "
                         f"got {ttl_s}")
    ring = _ring(secret)
    key = ring.signing
    if key is None or not key.can_sign:
        raise ValueError("no HS256 key to sign with")
    issued = time.time() if now is None else now
    # Whole seconds (what every JWT library reads), rounded up: the token lives at least ttl_s.
    claims: dict[str, Any] = {"sub": user, "iat": int(issued), "exp": math.ceil(issued + ttl_s)}
    aud, iss = audience or ring.audience, issuer or ring.issuer
    if aud:
        claims["aud"] = aud
    if iss:
        claims["iss"] = iss
    headers = {"kid": key.kid} if key.kid is not None else None
    return jwt.encode(claims, key.key, algorithm="HS256", headers=headers)


def verify_token(token: Any, keys: str | Keyring, *, now: float | None = None) -> str:
    """The user id inside a valid token; raises a :class:`TokenError` subclass otherwise."""
    return verify_claims(token, keys, now=now).user


def verify_claims(token: Any, keys: str | Keyring, *, now: float | None = None) -> Claims:
    """The user id and session end of a valid token; raises a :class:`TokenError` otherwise."""
    if token is None or token == "":
        raise MissingToken()
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
        raise InvalidToken("token must be a string")
    ring = _ring(keys)
    current = time.time() if now is None else now
    if token.count(".") == 2:
        return _verify_jwt(token, ring, current)
    if token.count(".") == 1 and ring.legacy_secret is not None:
        return _verify_legacy(token, ring, current)
    raise InvalidToken("token is not a JWT")


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"token claim {name!r} must be a finite number")
    return float(value)


def _verify_jwt(token: str, ring: Keyring, now: float) -> Claims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidToken("token header is malformed") from None
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("token kid must be a string")
    key = ring.keys.get(kid)
    if key is None:
        raise InvalidToken("token kid names no configured key")
    # The key decides the algorithm, never the token: no "none", no HMAC over a public key.
    if header.get("alg") != key.alg:
        raise InvalidToken(f"token algorithm must be {key.alg} for this key")
    try:
        payload = jwt.decode(
            token, key.key, algorithms=[key.alg], audience=ring.audience, issuer=ring.issuer,
            # Time claims are checked below against ``now`` (injectable, one leeway rule).
            options={"require": ["exp", "sub"], "verify_exp": False, "verify_nbf": False,
                     "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise InvalidToken("token signature does not match") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"token rejected: {exc}"[:120]) from None
    sub = payload.get("sub")
    if (not isinstance(sub, str) or not sub or len(sub) > MAX_USER_LEN
            or _BAD_USER_CHAR.search(sub)):
        raise InvalidToken("token sub must be a user id of 1-128 characters")
    exp = _number(payload, "exp")
    assert exp is not None  # required above
    if exp + ring.leeway_s <= now:
        raise ExpiredToken()
    nbf = _number(payload, "nbf")
    if nbf is not None and nbf - ring.leeway_s > now:
        raise InvalidToken("token is not valid yet (nbf)")
    return Claims(sub, exp + ring.leeway_s)


def _verify_legacy(token: str, ring: Keyring, now: float) -> Claims:
    assert ring.legacy_secret is not None
    try:
        payload = URLSafeSerializer(ring.legacy_secret, salt=SALT).loads(token)
    except BadSignature:
        raise InvalidToken("token signature does not match") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("u"), str)
        or not payload["u"]
    ):
        raise InvalidToken("token payload is malformed")
    exp = _number(payload, "exp")  # "exp": Infinity would never expire
    if exp is None:
        raise InvalidToken("token payload is malformed")
    if exp + ring.leeway_s <= now:
        raise ExpiredToken()
    return Claims(payload["u"], exp + ring.leeway_s)
