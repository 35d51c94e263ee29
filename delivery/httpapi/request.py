"""The body of ``POST /v1/messages`` read into a send, or an error naming the field (pure).

Only the request's shape is checked here (a JSON object, known fields, recipient xor
conversation); the fields' values are checked by ``delivery.validation.validate_send``, the same
rules as the Python API and the Celery task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FIELDS = ("sender", "recipient", "conversation", "body", "client_msg_id", "ttl_s")


@dataclass(frozen=True)
class Send:
    sender: Any
    recipient: Any  # None when the message is for a conversation
    conversation: Any
    body: Any
    client_msg_id: Any
    ttl_s: Any


@dataclass(frozen=True)
class BadRequest:
    error: str  # invalid_json | unknown_field | missing_field | invalid_field
    field: str | None
    message: str


def parse_send(raw: bytes) -> Send | BadRequest:
    try:
        data = json.loads(raw)
    except RecursionError:
        return BadRequest("invalid_field", "body", "body is nested too deeply")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return BadRequest("invalid_json", None, f"request body is not JSON: {exc}"[:200])
    if not isinstance(data, dict):
        return BadRequest("invalid_json", None, "request body must be a JSON object")
    unknown = sorted(k for k in data if k not in FIELDS)
    if unknown:
        return BadRequest("unknown_field", unknown[0][:128], f"unknown field {unknown[0]!r}"[:200])
    for name in ("sender", "body"):
        if name not in data:
            return BadRequest("missing_field", name, f"{name} is required")
    for name in ("recipient", "conversation"):
        if name in data and data[name] is None:  # null is not "absent" for an address
            return BadRequest("invalid_field", name, f"invalid {name}: must be a string, got null")
    has_rcp, has_conv = "recipient" in data, "conversation" in data
    if has_rcp == has_conv:
        return BadRequest("missing_field" if not has_rcp else "invalid_field", "recipient",
                          "exactly one of recipient and conversation is required")
    return Send(data["sender"], data.get("recipient"), data.get("conversation"), data["body"],
                data.get("client_msg_id"), data.get("ttl_s"))
