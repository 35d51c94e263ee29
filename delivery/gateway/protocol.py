"""The client <-> gateway wire protocol (documented in docs/protocol.md) and the node frames.

JSON text frames, each an object with a ``type``. This module holds the names, the codes, the
typed frames and their encoding and decoding, so the gateway, routing and the docs agree:
client frames decode to :data:`ClientFrame` (``Hello | Ack | Read | Ping``); the node channel
carries :class:`Deliver` (routing -> one gateway, alone or several in one ``deliver_batch``
PUBLISH for a group message) and :class:`Owed` (routing -> every gateway).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NamedTuple

from delivery.jsondepth import too_deep

# -- frame types --------------------------------------------------------------------------------
HELLO = "hello"  # client -> gateway, first frame: {"type", "token"}
WELCOME = "welcome"  # gateway -> client: {"type", "conn", "user"}
# gateway -> client: {"type", "id", "from", "body", "sent_at"[, "conversation", "seq", "prev",
# "message"]}
MESSAGE = "message"
RECEIPT = "receipt"  # gateway -> client (to a sender): see receipt_frame and docs/protocol.md
ACK = "ack"  # client -> gateway: {"type", "id"} (a message or a receipt id)
READ = "read"  # client -> gateway: {"type", "conversation", "seq"}: read up to seq
PING = "ping"  # client -> gateway (application keepalive, browsers cannot send WS pings)
PONG = "pong"  # gateway -> client
ERROR = "error"  # gateway -> client: {"type", "code", "message"[, "ref"]}

DELIVER = "deliver"  # routing -> gateway node channel (see docs/protocol.md)
DELIVER_BATCH = "deliver_batch"  # several deliver frames in one PUBLISH (a group message)
OWED = "owed"  # routing -> every gateway (broadcast channel): replay this user's unacked

# -- error codes (``error`` frames; the connection stays open) ----------------------------------
E_INVALID_JSON = "invalid_json"
E_INVALID_FRAME = "invalid_frame"
E_UNKNOWN_TYPE = "unknown_type"
E_BAD_ID = "bad_id"
E_BINARY = "binary_not_supported"
E_ALREADY_AUTHENTICATED = "already_authenticated"
E_RATE_LIMITED = "rate_limited"

# -- close codes --------------------------------------------------------------------------------
CLOSE_NORMAL = 1000  # idle timeout, client-requested close
CLOSE_GOING_AWAY = 1001  # gateway shutting down
CLOSE_INVALID_DATA = 1007  # hello that is not valid JSON / invalid UTF-8 text
CLOSE_POLICY = 1008  # auth failure, no hello in time, flood
CLOSE_TOO_BIG = 1009  # frame larger than max_frame_bytes
CLOSE_INTERNAL = 1011  # unexpected gateway error
# The user opened more than max_conns_per_user connections on this node: their oldest is closed.
# Application range (4000-4999): clients must not reconnect on it (that would evict another).
CLOSE_TOO_MANY_CONNECTIONS = 4008

MAX_ID_LEN = 64
# A conversation id on the wire: group ids are at most 128 characters; a direct conversation's
# id escapes both user ids (docs/routing.md), so it may be longer: up to the store's column,
# ``delivery.models.CONV_ID_LEN`` (12 characters per 4-byte character of a 128-character id).
MAX_CONVERSATION_LEN = 3076
MAX_SEQ = 2**63 - 1

# Receipt statuses.
DELIVERED = "delivered"
READ_STATUS = "read"
MAX_FRAME_DEPTH = 32  # client frames are flat objects; unknown fields may nest this deep


class FrameError(ValueError):
    """A client frame the gateway refuses; ``code`` is the error code sent back."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# -- client frames (typed) ----------------------------------------------------------------------
# Named tuples: one is built per client frame, on the hot path.


class Hello(NamedTuple):
    token: str | None


class Ack(NamedTuple):
    id: str
    uuid: uuid.UUID  # ``id`` parsed (the store's key)


class Read(NamedTuple):
    """The user has read every message of ``conversation`` up to ``seq``."""

    conversation: str
    seq: int


class Ping(NamedTuple):
    pass


ClientFrame = Hello | Ack | Read | Ping
_PING = Ping()


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Decode and validate one client frame; raises :class:`FrameError`."""
    if isinstance(data, bytes | bytearray | memoryview):
        raise FrameError(E_BINARY, "binary frames are not supported; send JSON text frames")
    # Client frames are flat; json recurses, so 8,000 levels used to escape as RecursionError
    # (a traceback and close 1011). Checked before parsing, at C speed for ordinary frames.
    if too_deep(data, MAX_FRAME_DEPTH):
        raise FrameError(E_INVALID_JSON,
                         f"frame is not valid JSON (nested deeper than {MAX_FRAME_DEPTH} levels)")
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        raise FrameError(E_INVALID_JSON, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError(E_INVALID_FRAME, "frame must be a JSON object")
    ftype = frame.get("type")
    if not isinstance(ftype, str):
        raise FrameError(E_INVALID_FRAME, "frame needs a string 'type'")
    if ftype == ACK:
        mid = frame.get("id")
        if not isinstance(mid, str):
            raise FrameError(E_INVALID_FRAME, "ack needs a string 'id'", ftype)
        if len(mid) > MAX_ID_LEN:
            raise FrameError(E_BAD_ID, "ack id is too long", ftype)
        try:
            return Ack(mid, uuid.UUID(mid))
        except ValueError:
            raise FrameError(E_BAD_ID, "ack id is not a message id", ftype) from None
    if ftype == HELLO:
        token = frame.get("token")
        if token is not None and not isinstance(token, str):
            raise FrameError(E_INVALID_FRAME, "hello needs a string 'token'", ftype)
        return Hello(token)
    if ftype == PING:
        return _PING
    if ftype == READ:
        conv, seq = frame.get("conversation"), frame.get("seq")
        if not isinstance(conv, str) or not conv or len(conv) > MAX_CONVERSATION_LEN:
            raise FrameError(E_INVALID_FRAME, "read needs a string 'conversation' "
                             f"(1 to {MAX_CONVERSATION_LEN} characters)", ftype)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ:
            raise FrameError(E_INVALID_FRAME, "read needs a positive integer 'seq'", ftype)
        return Read(conv, seq)
    raise FrameError(E_UNKNOWN_TYPE, f"unknown frame type {ftype[:32]!r}", ftype[:32])


def encode_client_frame(frame: ClientFrame) -> str:
    """What a client sends (tests and tools; the clients build their own)."""
    if isinstance(frame, Ack):
        return json.dumps({"type": ACK, "id": frame.id})
    if isinstance(frame, Hello):
        return json.dumps({"type": HELLO, "token": frame.token})
    if isinstance(frame, Read):
        return json.dumps({"type": READ, "conversation": frame.conversation, "seq": frame.seq})
    return json.dumps({"type": PING})


# -- gateway -> client frames -------------------------------------------------------------------

PONG_FRAME = '{"type":"pong"}'


def welcome_frame(conn: str, user: str) -> str:
    return json.dumps({"type": WELCOME, "conn": conn, "user": user})


def error_frame(code: str, message: str, ref: str | None = None) -> str:
    frame: dict[str, Any] = {"type": ERROR, "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return json.dumps(frame)


_compact = json.JSONEncoder(separators=(",", ":")).encode
_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")


class Place(NamedTuple):
    """Where a message sits in its conversation (docs/protocol.md, "Conversations").

    ``seq``: its number in the conversation (strictly increasing, gap-free); ``prev``: the seq
    of the previous message of the conversation addressed to the same recipient (0: none);
    ``message``: the message id the sender got back (a group message has one delivery id per
    recipient, the frame's ``id``; for a direct message both are the same)."""

    conversation: str
    seq: int
    prev: int
    message: str


def message_frame(msg_id: str, sender: str, body: Any, sent_at: str,
                  place: Place | None = None) -> str:
    """The ``message`` frame, compact. On the hot path (once per frame): one encoder made at
    import (``json.dumps`` with ``separators`` builds a new one per call), and a canonical UUID
    ``msg_id`` (always, from the store and from routing) is embedded without encoding."""
    if len(msg_id) == 36 and _UUID_CHARS.issuperset(msg_id):
        head = '{"type":"message","id":"' + msg_id + '","from":'
    else:
        head = '{"type":"message","id":' + _compact(msg_id) + ',"from":'
    tail = "}"
    if place is not None:
        tail = (',"conversation":' + _compact(place.conversation) + ',"seq":' + str(place.seq)
                + ',"prev":' + str(place.prev) + ',"message":' + _compact(place.message) + "}")
    return (head + _compact(sender) + ',"body":' + _compact(body) + ',"sent_at":'
            + _compact(sent_at) + tail)


def receipt_frame(receipt_id: str, payload: dict[str, Any]) -> str:
    """The ``receipt`` frame: ``payload`` is the stored receipt (``message``, ``conversation``,
    ``seq``, ``status`` and either ``user`` or ``count``/``of``; built by
    ``delivery.conversations.receipts``)."""
    return _compact({"type": RECEIPT, "id": receipt_id, **payload})


# -- node channel frames (routing -> gateway) ---------------------------------------------------
# Channels carry dicts (they encode them as JSON): these build and read those dicts.


class Deliver(NamedTuple):
    """One attempt of a message for some of ``user``'s connections on one gateway node."""

    id: str
    user: str
    sender: str  # "from" on the wire
    body: Any
    sent_at: str
    seq: int | None
    attempt: int
    conns: tuple[str, ...] = ()
    place: Place | None = None  # the message's conversation, seq and prev

    def message_frame(self) -> str:
        """The ``message`` frame the gateway sends to each connection."""
        return message_frame(self.id, self.sender, self.body, self.sent_at, self.place)


class Owed(NamedTuple):
    """Routing could not place a message for ``user`` (push or pending): a gateway holding a
    live connection of ``user`` replays that user's unacked messages."""

    user: str


class UnknownNodeFrame(NamedTuple):
    type: object


class DeliverBatch(NamedTuple):
    """Several ``deliver`` frames for one node in one PUBLISH (a group message's recipients
    on that node)."""

    frames: tuple[Deliver, ...]


NodeFrame = Deliver | DeliverBatch | Owed | UnknownNodeFrame


def encode_deliver(frame: Deliver) -> dict[str, Any]:
    """The ``deliver`` frame, keys in the order routing has always published them."""
    out = {"type": DELIVER, "id": frame.id, "user": frame.user, "from": frame.sender,
           "body": frame.body, "sent_at": frame.sent_at, "seq": frame.seq,
           "attempt": frame.attempt, "conns": list(frame.conns)}
    if frame.place is not None:
        out.update(conversation=frame.place.conversation, cseq=frame.place.seq,
                   prev=frame.place.prev, message=frame.place.message)
    return out


def encode_deliver_batch(frames: list[Deliver]) -> dict[str, Any]:
    return {"type": DELIVER_BATCH, "frames": [encode_deliver(f) for f in frames]}


def owed_frame(user: str) -> dict[str, Any]:
    return {"type": OWED, "user": user}


def decode_node_frame(frame: dict[str, Any]) -> NodeFrame:
    """Read one node-channel frame; raises ``ValueError`` (or ``KeyError``) on a malformed
    ``deliver`` frame. The gateway parses the id as a UUID itself (once, as the store key)."""
    ftype = frame.get("type")
    if ftype == OWED:
        return Owed(str(frame.get("user")))
    if ftype == DELIVER_BATCH:
        frames = frame.get("frames")
        if not isinstance(frames, list):
            raise ValueError("deliver_batch frame needs frames (list)")
        return DeliverBatch(tuple(_decode_deliver(f) for f in frames))
    if ftype != DELIVER:
        return UnknownNodeFrame(ftype)
    return _decode_deliver(frame)


def _decode_deliver(frame: dict[str, Any]) -> Deliver:
    if not isinstance(frame, dict) or frame.get("type") != DELIVER:
        raise ValueError("not a deliver frame")
    msg_id = str(frame["id"])
    user = frame["user"]
    conns = frame.get("conns") or []
    attempt = frame.get("attempt")
    if not isinstance(user, str) or not isinstance(conns, list) or not isinstance(attempt, int):
        raise ValueError("deliver frame needs user (str), conns (list), attempt (int)")
    place = None
    conv = frame.get("conversation")
    if conv is not None:
        cseq, prev = frame.get("cseq"), frame.get("prev")
        if not isinstance(conv, str) or not isinstance(cseq, int) or not isinstance(prev, int):
            raise ValueError("deliver frame: conversation (str) needs cseq and prev (int)")
        place = Place(conv, cseq, prev, str(frame.get("message", msg_id)))
    return Deliver(id=msg_id, user=user, sender=str(frame.get("from", "")),
                   body=frame.get("body"), sent_at=str(frame.get("sent_at", "")),
                   seq=frame.get("seq"), attempt=attempt, conns=tuple(map(str, conns)),
                   place=place)
