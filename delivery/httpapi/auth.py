"""Server keys on ``POST /v1/messages``: ``Authorization: Bearer KEY``, compared in constant time.

Pure: the caller passes the header and the configured keys (DELIVERY_API_KEYS; several at once
while a key rotates). A key lets a backend send as any sender: it is the chat backend's
credential, like the broker's and the database's.
"""

from __future__ import annotations

import hmac
from enum import Enum


class Auth(Enum):
    OK = "ok"
    MISSING = "missing"  # no Authorization header, or not "Bearer ..."
    WRONG = "wrong"  # a bearer key that is not configured


def authorize(header: str | None, keys: tuple[str, ...]) -> Auth:
    """Whether ``header`` carries one of ``keys``. Every key is compared, to the end of each
    (``hmac.compare_digest``), so the time taken tells nothing about which bytes matched."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return Auth.MISSING
    # Starlette decodes headers as Latin-1: back to the bytes the client sent.
    given = value.strip().encode("latin-1", "replace")
    match = False
    for key in keys:
        match |= hmac.compare_digest(given, key.encode("utf-8", "surrogatepass"))
    return Auth.OK if match else Auth.WRONG
