"""Validation of what the chat application hands us: a clear error naming the field."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from delivery.models import ID_LEN

# Message ids derived from (sender, client_msg_id): a retried send maps to the same id, so the
# Python helper can return the id without waiting for the worker.
MESSAGE_NAMESPACE = uuid.UUID("6f1c2d8e-5a4b-4c3d-9e8f-7a6b5c4d3e2f")


class InvalidMessage(ValueError):
    """Bad input to the send task. Never retried; nothing is stored."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class SendRequest:
    sender: str
    recipient: str
    body: Any
    client_msg_id: str | None
    ttl_s: float
    message_id: uuid.UUID


def _check_id(field: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(field, f"must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidMessage(field, "must not be empty")
    if len(value) > ID_LEN:
        raise InvalidMessage(field, f"must be at most {ID_LEN} characters, got {len(value)}")
    return value


def message_id_for(sender: str, client_msg_id: str | None) -> uuid.UUID:
    if client_msg_id is None:
        return uuid.uuid4()
    return uuid.uuid5(MESSAGE_NAMESPACE, f"{sender}\x00{client_msg_id}")


def validate_send(
    sender: Any,
    recipient: Any,
    body: Any,
    client_msg_id: Any = None,
    ttl_s: Any = None,
    *,
    max_body_bytes: int,
    default_ttl_s: float,
) -> SendRequest:
    snd = _check_id("sender", sender)
    rcp = _check_id("recipient", recipient)
    cmid = _check_id("client_msg_id", client_msg_id, optional=True)
    assert snd is not None and rcp is not None
    try:
        encoded = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("body", f"must be JSON-serialisable ({exc})") from None
    size = len(encoded.encode("utf-8"))
    if size > max_body_bytes:
        raise InvalidMessage("body", f"is {size} bytes, more than the limit of {max_body_bytes}")
    if ttl_s is None:
        ttl = default_ttl_s
    else:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise InvalidMessage("ttl_s", f"must be a number, got {type(ttl_s).__name__}")
        ttl = float(ttl_s)
        if not ttl > 0 or ttl != ttl or ttl == float("inf"):
            raise InvalidMessage("ttl_s", f"must be a positive finite number, got {ttl_s}")
    return SendRequest(snd, rcp, body, cmid, ttl, message_id_for(snd, cmid))
