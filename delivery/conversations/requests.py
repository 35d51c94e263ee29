"""A validated group send (``send_to_conversation`` and the ``delivery.send_group`` task)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from delivery.conversations.ids import check_group_id
from delivery.validation import MAX_BODY_DEPTH, validate_send


@dataclass(frozen=True)
class GroupSendRequest:
    sender: str
    conversation: str
    body: Any
    client_msg_id: str | None
    ttl_s: float
    message_id: uuid.UUID


def validate_group_send(
    sender: Any, conversation: Any, body: Any, client_msg_id: Any = None, ttl_s: Any = None,
    *, max_body_bytes: int, default_ttl_s: float, max_body_depth: int = MAX_BODY_DEPTH,
) -> GroupSendRequest:
    """As ``validate_send`` (same rules and message id), with a group conversation id."""
    conv = check_group_id(conversation)
    req = validate_send(sender, conv, body, client_msg_id, ttl_s, max_body_bytes=max_body_bytes,
                        default_ttl_s=default_ttl_s, max_body_depth=max_body_depth)
    return GroupSendRequest(req.sender, conv, req.body, req.client_msg_id, req.ttl_s,
                            req.message_id)
