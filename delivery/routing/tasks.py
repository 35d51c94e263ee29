"""``delivery.route``: re-route a message after a nack, a wait, or a passed deadline.

New messages are routed inside ``delivery.send`` (one Celery task per message on the hot
path); this task runs only off the happy path.
"""

from __future__ import annotations

from celery import shared_task

from delivery.routing.policy import Trigger
from delivery.runtime import get_runtime
from delivery.task_names import ROUTE_TASK


@shared_task(name=ROUTE_TASK, ignore_result=True)
def route(
    message_id: str,
    trigger: str = "nack",
    attempt: int | None = None,
    nacked: list[str] | None = None,
    node: str | None = None,
) -> str:
    """Route ``message_id`` again with fresh presence. Idempotent: a stale attempt is ignored."""
    router = get_runtime().router
    if router is None:
        raise RuntimeError("no router in this process: run it in a delivery worker")
    decision = router.route(message_id, Trigger(trigger), attempt=attempt,
                                 nacked=nacked or ())
    return type(decision).__name__.lower()
