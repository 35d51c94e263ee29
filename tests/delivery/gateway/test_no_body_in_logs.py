"""A node frame the gateway cannot use is logged by message id, never with its body."""

from __future__ import annotations

import logging
import uuid

import pytest

from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run

MARKER = f"BODYMARK{uuid.uuid4().hex}"


def test_a_bad_node_frame_is_logged_without_its_body(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    # The fault: "bad node frame %r" logged the whole frame, body included.
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            mid = str(uuid.uuid4())
            h.channels.publish(h.gateway.node, {  # no attempt: the gateway refuses it
                "type": "deliver", "id": mid, "user": "bob", "from": "alice",
                "body": {"text": MARKER}, "conns": ["gw1.x"]})
            await h.wait_for(lambda: any("bad node frame" in r.getMessage()
                                         for r in caplog.records))
            line = next(r for r in caplog.records if "bad node frame" in r.getMessage())
            assert mid in line.getMessage()

    with caplog.at_level(logging.ERROR, logger="delivery.gateway"):
        run(main())
    assert MARKER not in caplog.text
