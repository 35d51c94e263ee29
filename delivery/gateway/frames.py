"""The wire form of a stored row: a ``message`` frame with its place, or a ``receipt``."""

from __future__ import annotations

from delivery.gateway.protocol import Place, message_frame, receipt_frame
from delivery.store.records import MessageRecord
from delivery.vocabulary import Kind


def place_of(msg: MessageRecord) -> Place | None:
    """Where a stored message sits in its conversation (None: stored before conversations)."""
    if msg.conversation_id is None or msg.conv_seq is None:
        return None
    return Place(msg.conversation_id, msg.conv_seq, msg.conv_prev or 0, str(msg.message_id))


def frame_for(msg: MessageRecord) -> str:
    """The frame a client gets for a stored row (replay)."""
    if msg.kind == Kind.RECEIPT:
        return receipt_frame(str(msg.id), msg.body)
    return message_frame(str(msg.id), msg.sender, msg.body, msg.created_at.isoformat(),
                         place_of(msg))
