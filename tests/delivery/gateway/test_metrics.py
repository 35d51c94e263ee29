"""The gateway feeds the Prometheus metrics: delivered outcomes, ack latency, connections."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY

from delivery.models import State
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, recv_messages, run


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_won_acks_count_as_delivered_with_their_latency(sqlite_store: Store) -> None:
    delivered_before = sample("delivery_messages_total", outcome="delivered")
    latency_before = sample("delivery_ack_latency_seconds_count")

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob", {"text": "hello"})
            h.deliver(msg, [w["conn"]])
            (frame,) = await recv_messages(ws, 1)
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))  # a duplicate ack
            await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            await h.wait_for(
                lambda: sample("delivery_gateway_connections") == 1, timeout=5)
            await ws.close()

    run(main())
    assert sample("delivery_messages_total", outcome="delivered") == delivered_before + 1
    assert sample("delivery_ack_latency_seconds_count") == latency_before + 1
