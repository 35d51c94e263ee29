"""Device-token registration for push: validation with a clear error naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from delivery.clock import utcnow
from delivery.models import ID_LEN
from delivery.push.fcm import token_ref
from delivery.runtime import Runtime, get_runtime
from delivery.store import DeviceRecord

PLATFORMS = ("android", "ios", "web")
TOKEN_MAX = 4096


class InvalidDevice(ValueError):
    """Bad input to device registration; nothing is stored."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


def _check(field: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidDevice(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidDevice(field, "must not be empty")
    if field == "token" and any(ch.isspace() for ch in value):
        raise InvalidDevice(field, "must not contain whitespace")
    if len(value) > limit:
        raise InvalidDevice(field, f"must be at most {limit} characters, got {len(value)}")
    return value


def validate_device(user: Any, token: Any, platform: Any) -> tuple[str, str, str]:
    u = _check("user", user, ID_LEN)
    t = _check("token", token, TOKEN_MAX)
    if not isinstance(platform, str) or platform.lower() not in PLATFORMS:
        raise InvalidDevice("platform", f"must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    return u, t, platform.lower()


def register_device(
    user: Any, token: Any, platform: Any = "android", *, runtime: Runtime | None = None,
    now: datetime | None = None,
) -> DeviceRecord:
    """Register ``token`` for ``user`` (re-owning and re-enabling it if it was known)."""
    u, t, p = validate_device(user, token, platform)
    rt = runtime or get_runtime()
    return rt.store.register_device(u, t, p, now or utcnow())


def device_dict(d: DeviceRecord) -> dict[str, Any]:
    """JSON-friendly view of a device (the token is included: it is the caller's own)."""
    return {
        "id": d.id, "user": d.user_id, "token": d.token, "ref": token_ref(d.token),
        "platform": d.platform, "created_at": d.created_at.isoformat(),
        "last_seen_at": d.last_seen_at.isoformat(),
        "disabled_at": d.disabled_at.isoformat() if d.disabled_at else None,
        "disabled_reason": d.disabled_reason,
    }
