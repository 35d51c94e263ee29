"""The keys gateway tokens (JWTs) may be signed with: ``DELIVERY_TOKEN_KEYS``, parsed and checked.

``KID=hs256:SECRET`` (a shared secret, checked like DELIVERY_SECRET), ``KID=rs256:PATH`` or
``KID=es256:PATH`` (a PEM public key: the backend keeps the private key, the gateways can only
verify), comma-separated, newest first. Several at once is how keys rotate: a token names its key
in the JWT header's ``kid``. Each key has exactly one algorithm, so a token can never pick how
its key is used (no ``none``, no HMAC keyed with a public key). Pure apart from reading the PEM
files; used by settings (start-up check) and the token verifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from delivery.secret import WeakSecret, check_secret

VAR = "DELIVERY_TOKEN_KEYS"
ALGORITHMS = ("HS256", "RS256", "ES256")
MIN_RSA_BITS = 2048
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BadTokenKeys(ValueError):
    """A token key entry is malformed, weak or unreadable; the message names the variable."""


@dataclass(frozen=True)
class TokenKey:
    kid: str | None  # None: DELIVERY_SECRET, for tokens without a ``kid``
    alg: str  # one of ALGORITHMS: the only algorithm this key verifies
    key: Any  # the HMAC secret (str) or a cryptography public key

    @property
    def can_sign(self) -> bool:
        return self.alg == "HS256"


def _public_key(kid: str, alg: str, path: str, var: str) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadTokenKeys(f"{var}: key {kid!r}: cannot read {path}: {exc.strerror}") from None
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise BadTokenKeys(f"{var}: key {kid!r}: {path} is not a PEM public key "
                           "(a private key or certificate does not belong here)") from None
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise BadTokenKeys(f"{var}: key {kid!r}: rs256 needs an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise BadTokenKeys(f"{var}: key {kid!r}: RSA key has {key.key_size} bits, "
                               f"fewer than {MIN_RSA_BITS}")
    elif not (isinstance(key, ec.EllipticCurvePublicKey)
              and isinstance(key.curve, ec.SECP256R1)):
        raise BadTokenKeys(f"{var}: key {kid!r}: es256 needs an EC P-256 public key")
    return key


def parse_token_keys(value: str, var: str = VAR) -> tuple[TokenKey, ...]:
    """The keys in ``value`` (see the module doc), or :class:`BadTokenKeys` (one line)."""
    keys: list[TokenKey] = []
    seen: set[str] = set()
    for n, raw in enumerate(value.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        kid, eq, spec = entry.partition("=")
        alg, colon, material = spec.partition(":")
        alg = alg.strip().upper()
        kid = kid.strip()
        if not eq or not colon or not material:
            raise BadTokenKeys(f"{var}: entry {n} must look like KID=hs256:SECRET or "
                               "KID=rs256:PATH or KID=es256:PATH")
        if not _KID.match(kid):
            raise BadTokenKeys(f"{var}: entry {n}: kid must be 1-64 of A-Z a-z 0-9 . _ -")
        if kid in seen:
            raise BadTokenKeys(f"{var}: kid {kid!r} is listed twice")
        seen.add(kid)
        if alg not in ALGORITHMS:
            raise BadTokenKeys(f"{var}: key {kid!r}: algorithm must be one of "
                               f"{', '.join(a.lower() for a in ALGORITHMS)}, got {alg.lower()!r}")
        if alg == "HS256":
            try:
                check_secret(material, f"{var} (key {kid!r})")
            except WeakSecret as exc:
                raise BadTokenKeys(str(exc)) from None
            keys.append(TokenKey(kid, alg, material))
        else:
            keys.append(TokenKey(kid, alg, _public_key(kid, alg, material.strip(), var)))
    return tuple(keys)
