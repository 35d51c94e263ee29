"""Celery tasks with stable names. Thin adapters: the logic lives in the store and routing."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from delivery.clock import later, utcnow
from delivery.runtime import get_runtime
from delivery.task_names import NOOP_TASK, SEND_TASK
from delivery.validation import InvalidMessage, validate_send


# No result on success: the id is known to the caller (derived from client_msg_id), and a
# result write per message would be one more Redis round trip on the hot path. Failures are
# still stored (task_store_errors_even_if_ignored), so a caller can see why a send failed.
@shared_task(name=SEND_TASK, throws=(InvalidMessage,), ignore_result=True)
def send(
    sender: Any,
    recipient: Any,
    body: Any,
    client_msg_id: Any = None,
    ttl_s: Any = None,
) -> str:
    """Store the message durably (once), then hand it to routing. Returns the message id."""
    rt = get_runtime()
    req = validate_send(
        sender, recipient, body, client_msg_id, ttl_s,
        max_body_bytes=rt.settings.max_body_bytes, default_ttl_s=rt.settings.message_ttl_s,
    )
    router = rt.extras.get("router")
    if router is not None:
        return str(router.accept_and_route(req).id)
    # No router in this process (no presence replica): store only; the recovery sweep of a
    # worker routes it once the deadline passes.
    now = utcnow()
    msg, _ = rt.store.accept_request(req, now=now, deadline=later(rt.settings.ack_timeout_s, now))
    return str(msg.id)


# The raw-Celery baseline of the end-to-end benchmark (bench/e2e.py): an empty task on
# the same broker, pool and workers, so the pipeline's throughput can be given as a ratio.
@shared_task(name=NOOP_TASK, ignore_result=True)
def noop() -> None:
    return None
