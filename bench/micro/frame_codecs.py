"""CPU per gateway frame encode/decode: ``json`` (today) vs orjson vs msgspec.

Run in a scratch venv with the candidates: ``python -m venv /tmp/vx && /tmp/vx/bin/pip install
orjson msgspec && /tmp/vx/bin/python bench/micro/frame_codecs.py`` (docs/performance.md, the
gateway section). Prints one JSON object: microseconds of CPU per operation, best of 5.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec  # type: ignore[import-not-found, unused-ignore]
import orjson  # type: ignore[import-not-found, unused-ignore]

_compact = json.JSONEncoder(separators=(",", ":")).encode
MID = str(uuid.uuid4())
SENT = "2026-12-02T17:00:00.123456+00:00"
BODY = {"text": "hello there, this is a chat message of ordinary length", "n": 42}
FRAME: dict[str, Any] = {"type": "message", "id": MID, "from": "alice", "body": BODY,
                         "sent_at": SENT}
NODE = json.dumps({"type": "deliver_batch", "frames": [
    {"type": "deliver", "id": str(uuid.uuid4()), "conn": f"c{i}", "sender": "alice",
     "body": BODY, "sent_at": SENT, "attempt": 1, "deadline": 1.0} for i in range(4)]})
ACK = json.dumps({"type": "ack", "id": MID})


def current_message_frame() -> str:
    """As ``delivery.gateway.protocol.message_frame`` builds it."""
    return ('{"type":"message","id":"' + MID + '","from":' + _compact("alice") + ',"body":'
            + _compact(BODY) + ',"sent_at":' + _compact(SENT) + "}")


def cpu_us(f: Callable[[], object], n: int = 50_000) -> float:
    best = []
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            f()
        best.append((time.process_time() - t) / n * 1e6)
    return round(min(best), 2)


def main() -> None:
    enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
    print(json.dumps({
        "message_frame_encode_us": {
            "json": cpu_us(current_message_frame),
            "orjson": cpu_us(lambda: orjson.dumps(FRAME).decode()),
            "msgspec": cpu_us(lambda: enc.encode(FRAME).decode())},
        "deliver_batch_of_4_decode_us": {
            "json": cpu_us(lambda: json.loads(NODE), 20_000),
            "orjson": cpu_us(lambda: orjson.loads(NODE), 20_000),
            "msgspec": cpu_us(lambda: dec.decode(NODE), 20_000)},
        "ack_decode_us": {
            "json": cpu_us(lambda: json.loads(ACK)),
            "orjson": cpu_us(lambda: orjson.loads(ACK)),
            "msgspec": cpu_us(lambda: dec.decode(ACK))},
    }, indent=1))


if __name__ == "__main__":
    main()
