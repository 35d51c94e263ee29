"""Gateway tokens: the user id and an expiry, signed with DELIVERY_SECRET (itsdangerous).

A token is what a client puts in its ``hello`` frame. It is issued by the chat backend (which
authenticated the user) with :func:`issue_token` or ``delivery token USER [--ttl SECONDS]``.
The expiry travels inside the signed payload, so each token can have its own lifetime.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

from itsdangerous import BadSignature, URLSafeSerializer

from delivery.secret import check_secret
from delivery.settings import MAX_TOKEN_TTL_S

SALT = "delivery.gateway.token.v1"
MAX_USER_LEN = 128


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
    exp: float  # UNIX seconds; the gateway closes the connection then (docs/protocol.md)


def _serializer(secret: str) -> URLSafeSerializer:
    check_secret(secret)  # a weak or published secret signs nothing (WeakSecret, a ValueError)
    return URLSafeSerializer(secret, salt=SALT)


def issue_token(user: str, secret: str, ttl_s: float, *, now: float | None = None) -> str:
    """A signed token for ``user`` that expires ``ttl_s`` seconds from now."""
    if not isinstance(user, str) or not user or len(user) > MAX_USER_LEN:
        raise ValueError(f"user must be a non-empty string of at most {MAX_USER_LEN} characters")
    if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s)
            and 0 < ttl_s <= MAX_TOKEN_TTL_S):
        raise ValueError(f"ttl_s must be a number in (0, {MAX_TOKEN_TTL_S:g}] seconds, "
                         f"got {ttl_s}")
    issued = time.time() if now is None else now
    payload = {"u": user, "exp": round(issued + ttl_s, 3)}
    token: str = _serializer(secret).dumps(payload)
    return token


def verify_token(token: Any, secret: str, *, now: float | None = None) -> str:
    """The user id inside a valid token; raises a :class:`TokenError` subclass otherwise."""
    return verify_claims(token, secret, now=now).user


def verify_claims(token: Any, secret: str, *, now: float | None = None) -> Claims:
    """The user id and expiry inside a valid token; raises a :class:`TokenError` otherwise."""
    if token is None or token == "":
        raise MissingToken()
    if not isinstance(token, str) or len(token) > 4096:
        raise InvalidToken("token must be a string")
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature:
        raise InvalidToken("token signature does not match") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("u"), str)
        or not payload["u"]
        or isinstance(payload.get("exp"), bool)
        or not isinstance(payload.get("exp"), int | float)
        or not math.isfinite(payload["exp"])  # "exp": Infinity would never expire
    ):
        raise InvalidToken("token payload is malformed")
    current = time.time() if now is None else now
    if payload["exp"] <= current:
        raise ExpiredToken()
    return Claims(payload["u"], float(payload["exp"]))
