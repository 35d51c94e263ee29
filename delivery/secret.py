"""The token-signing secret: what is strong enough, and the embedded default's per-directory secret.

Anyone who knows the secret can mint a gateway token for any user and read their messages, so a
secret that was ever published (an example in the docs, a test fixture, the old built-in dev
value) or is short enough to guess is refused everywhere it is read (settings, token issue and
verify). ``check_secret`` is pure; ``data_dir_secret`` is the only I/O (a 0600 file).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

VAR = "DELIVERY_SECRET"
MIN_BYTES = 32
MIN_DISTINCT = 8  # "a" * 32 is 32 bytes but no secret
SECRET_FILE = "secret"

# Every secret value this project ever published (docs, examples, tests, benchmarks). Refused
# even if long; tests/delivery/test_settings.py checks that each example in the tree is here.
PUBLISHED: frozenset[str] = frozenset({
    "dev-insecure-secret",
    "test-secret",
    "bench-secret",
    "cli-secret",
    "s3cret",
    "CHANGE-ME-long-random-secret",
})
_PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me")


class WeakSecret(ValueError):
    """The secret is missing, short, or published; the message names the variable."""


_strong: set[str] = set()  # values that passed: the gateway checks on every hello


def check_secret(value: str, var: str = VAR) -> None:
    """Raise :class:`WeakSecret` unless ``value`` may sign tokens. One line, names ``var``."""
    if value in _strong:
        return
    if not value:
        raise WeakSecret(f"{var} is empty")
    if value in PUBLISHED or any(m in value.lower() for m in _PLACEHOLDER_MARKS):
        raise WeakSecret(f"{var} is a published example value; generate one with "
                         "python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size < MIN_BYTES:
        raise WeakSecret(f"{var} must be at least {MIN_BYTES} bytes, got {size}")
    if len(set(value)) < MIN_DISTINCT:
        raise WeakSecret(f"{var} has fewer than {MIN_DISTINCT} distinct characters")
    if len(_strong) < 64:
        _strong.add(value)


def new_secret() -> str:
    return secrets.token_urlsafe(MIN_BYTES)  # 43 characters, 256 random bits


_cache: dict[str, str] = {}  # data dir as given -> its secret (no path resolution per hello)


def data_dir_secret(data_dir: str) -> str:
    """The embedded default's secret: ``DATA_DIR/secret`` (mode 0600), created on first use.

    Per data directory, so ``delivery up`` and ``delivery token`` in the same directory agree,
    and no two installations share one. Created atomically (link of a complete temp file), so
    two processes starting together read the same value.
    """
    cached = _cache.get(data_dir)
    if cached is not None:
        return cached
    path = (Path(data_dir) / SECRET_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new_secret() + "\n")
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WeakSecret(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                         f"chmod 600 it or set {VAR}")
    value = path.read_text().strip()
    check_secret(value, f"{VAR} (from {path})")
    _cache[data_dir] = value
    return value


def parse_keys(value: str, var: str) -> tuple[str, ...]:
    """Comma-separated secrets (several at once: rotation), each checked like DELIVERY_SECRET;
    :class:`WeakSecret` names ``var`` and the entry's position, never its value."""
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for n, key in enumerate(keys, 1):
        check_secret(key, f"{var} (key {n})")
    return keys
