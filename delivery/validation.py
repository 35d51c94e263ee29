"""Validation of what the chat application hands us: a clear error naming the field."""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from delivery.jsondepth import too_deep
from delivery.models import ID_LEN
from delivery.settings import MAX_TTL_S

# Ids are names, not content: no C0/C1 control characters (NUL included: PostgreSQL refuses it,
# so it used to fail in the worker after the caller got an id) and no lone surrogates (not
# encodable as UTF-8).
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Default of DELIVERY_MAX_BODY_DEPTH: arrays/objects nested deeper are refused.
MAX_BODY_DEPTH = 64

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
    bad = _BAD_ID_CHAR.search(value)
    if bad is not None:
        raise InvalidMessage(field, f"must not contain control characters or lone surrogates "
                             f"(U+{ord(bad.group()):04X} at {bad.start()})")
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
    max_body_depth: int = MAX_BODY_DEPTH,
) -> SendRequest:
    """A valid send, or :class:`InvalidMessage` naming the field. What this accepts, the store
    stores and reads back equal (tests/delivery/test_validation.py, on SQLite and PostgreSQL).

    Ids: 1..128 characters, not blank, no control characters or lone surrogates. Body: JSON
    (finite numbers), at most ``max_body_bytes`` as UTF-8 JSON, nested at most
    ``max_body_depth`` deep. ``ttl_s``: a number in (0, MAX_TTL_S] (366 days).
    """
    snd = _check_id("sender", sender)
    rcp = _check_id("recipient", recipient)
    cmid = _check_id("client_msg_id", client_msg_id, optional=True)
    assert snd is not None and rcp is not None
    try:
        encoded = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise InvalidMessage("body", f"is nested deeper than {max_body_depth} levels") from None
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("body", f"must be JSON-serialisable ({exc})") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessage("body", "contains a lone surrogate (not valid Unicode)") from None
    if size > max_body_bytes:
        raise InvalidMessage("body", f"is {size} bytes, more than the limit of {max_body_bytes}")
    if too_deep(encoded, max_body_depth):
        raise InvalidMessage("body", f"is nested deeper than {max_body_depth} levels")
    if ttl_s is None:
        ttl = default_ttl_s
    else:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise InvalidMessage("ttl_s", f"must be a number, got {type(ttl_s).__name__}")
        try:
            ttl = float(ttl_s)
        except OverflowError:  # an int beyond float range
            raise InvalidMessage("ttl_s", f"must be at most {MAX_TTL_S:g} seconds") from None
        if not math.isfinite(ttl) or not 0 < ttl <= MAX_TTL_S:
            raise InvalidMessage("ttl_s", f"must be a number in (0, {MAX_TTL_S:g}] seconds, "
                                 f"got {ttl_s!r}"[:120])
    # What the store keeps is this JSON, so the request carries it too (int keys become
    # strings, tuples lists): the caller, the task and the store all see the same value.
    return SendRequest(snd, rcp, json.loads(encoded), cmid, ttl, message_id_for(snd, cmid))
