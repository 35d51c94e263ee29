"""Node channels on a real Redis: a batch of frames is one PUBLISH, read back frame by frame."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from delivery.channels import RedisChannels, channel_name
from workers.devkit.services import REDIS_URL


def test_publish_many_is_one_message_read_back_frame_by_frame() -> None:
    prefix = f"test-chan-{uuid.uuid4().hex[:8]}"
    channels = RedisChannels(REDIS_URL, prefix)
    got: list[dict[str, Any]] = []
    sub = channels.subscribe("gw-a", got.append)
    raw = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    raw.subscribe(channel_name(prefix, "gw-a"))
    try:
        deadline = time.monotonic() + 5
        while channels.publish_many("gw-a", [{"type": "owed", "user": "warm"}]) < 2:
            assert time.monotonic() < deadline, "subscribers never came up"
            time.sleep(0.02)
        frames = [{"type": "owed", "user": f"u{i}"} for i in range(5)]
        assert channels.publish_many("gw-a", frames) == 2  # ours and the raw one
        deadline = time.monotonic() + 5
        while len([f for f in got if f["user"] != "warm"]) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [f for f in got if f["user"] != "warm"] == frames
        raw_msgs = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # None also stands for a skipped subscribe reply
            m = raw.get_message(timeout=0.1)
            if m is not None:
                raw_msgs.append(m)
        assert len([m for m in raw_msgs if b"warm" not in m["data"]]) == 1  # one PUBLISH
    finally:
        sub.close()
        raw.close()
