"""Celery tasks with stable names. Thin adapters: the logic lives in the store and routing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from delivery.clock import later, utcnow
from delivery.conversations.requests import GroupSendRequest, validate_group_send
from delivery.redaction import RedactingTask
from delivery.runtime import Runtime, get_runtime
from delivery.task_names import NOOP_TASK, SEND_GROUP_TASK, SEND_TASK
from delivery.validation import InvalidMessage, SendRequest, validate_send

log = logging.getLogger("delivery.tasks")

# The database is unreachable or too slow right now (restart, failover, outage): the send is
# retried, never acked as failed — a task acked without its row would be a silently lost
# message. Anything else (a bug, a constraint) fails loudly.
DB_UNAVAILABLE = (OperationalError, InterfaceError, SATimeoutError)
RETRY_BASE_S = 0.2
RETRY_MAX_S = 5.0


def retry_delay(retries: int) -> float:
    """Exponential backoff for a send waiting for the database: 0.2, 0.4, ... capped at 5 s."""
    return float(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(retries, 16)))


class SendTask(RedactingTask):
    """``delivery.send`` in a worker: requests are run in batches (delivery/send_batching.py);
    called directly, eagerly or through ``apply`` it is the plain per-message task below.
    A RedactingTask like every task of the app: a failure's text is scrubbed of bodies."""

    def Strategy(self, task: Task, app: Any, consumer: Any, **kwargs: Any) -> Any:
        from delivery.send_batching import batched_strategy

        settings = get_runtime().settings
        return batched_strategy(task, app, consumer, run_send_batch,
                                max_batch=settings.send_batch_max,
                                max_inflight=settings.send_batch_inflight, **kwargs)


def run_send_batch(requests: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Route a batch of ``delivery.send`` requests: the sends whose recipient is online are
    stored or claimed in one transaction per kind (stored first by ``send_message``, or
    enqueue-only) and published with one PUBLISH per node. Returns (completed, left for the
    per-message task): anything else — invalid input, recipients not online, duplicates,
    messages the batch did not claim, a database outage — runs through the per-message task,
    with its retries and failure reporting."""
    rt = get_runtime()
    router = rt.router
    if router is None:
        return [], list(requests)
    s = rt.settings
    # message id -> (request, validated send), for stored and enqueue-only sends apart
    batches: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
    rest: list[Any] = []
    for r in requests:
        kw = dict(r.kwargs or {})
        stored = bool(kw.pop("stored", False))
        try:
            if r.args:
                raise TypeError("positional arguments")
            req = validate_send(**kw, max_body_bytes=s.max_body_bytes,
                                default_ttl_s=s.message_ttl_s, max_body_depth=s.max_body_depth)
        except (InvalidMessage, TypeError):
            rest.append(r)  # the per-message task reports it
            continue
        batch = batches[0 if stored else 1]
        if req.message_id in batches[0] or req.message_id in batches[1]:
            rest.append(r)  # the same message twice in one batch: the second alone
            continue
        batch[req.message_id] = (r, req)
    done: list[Any] = []
    for batch, route in ((batches[0], router.route_stored_many),
                         (batches[1], router.accept_and_route_many)):
        if not batch:
            continue
        try:
            left = route([req for _, req in batch.values()])
        except DB_UNAVAILABLE as exc:
            log.warning("send batch of %d: database unavailable (%s); sending one by one",
                        len(batch), type(exc).__name__)
            rest += [r for r, _ in batch.values()]
            continue
        left_ids = {req.message_id for req in left}
        done += [r for mid, (r, _) in batch.items() if mid not in left_ids]
        rest += [batch[mid][0] for mid in left_ids]
    return done, rest


# No result on success: the id is known to the caller (derived from client_msg_id), and a
# result write per message would be one more Redis round trip on the hot path. Failures are
# still stored (task_store_errors_even_if_ignored), so a caller can see why a send failed.
@shared_task(bind=True, base=SendTask, name=SEND_TASK, throws=(InvalidMessage,),
             ignore_result=True, max_retries=None)
def send(
    self: Task,
    sender: Any,
    recipient: Any,
    body: Any,
    client_msg_id: Any = None,
    ttl_s: Any = None,
    stored: bool = False,
) -> str:
    """Store the message durably (once), then hand it to routing. Returns the message id.

    ``stored``: the producer stored it already (the default ``send_message``); route it.
    """
    rt = get_runtime()
    req = validate_send(
        sender, recipient, body, client_msg_id, ttl_s,
        max_body_bytes=rt.settings.max_body_bytes, default_ttl_s=rt.settings.message_ttl_s,
        max_body_depth=rt.settings.max_body_depth,
    )
    try:
        return _store_and_route(rt, req, stored=bool(stored))
    except DB_UNAVAILABLE as exc:
        delay = retry_delay(self.request.retries)
        log.warning("send %s: database unavailable (%s); retrying in %.1fs",
                    req.message_id, type(exc).__name__, delay)
        raise self.retry(countdown=delay) from None


def _store_and_route(rt: Runtime, req: SendRequest, *, stored: bool) -> str:
    router = rt.router
    if stored:
        # No router here (no presence replica): the sweep routes it once its deadline passes.
        msg = router.route_stored(req) if router is not None else rt.store.get(req.message_id)
        if msg is not None:
            return str(msg.id)
        # Not there (a producer on another database?): store it here, as any send.
    if router is not None:
        return str(router.accept_and_route(req).id)
    # No router in this process (no presence replica): store only; the recovery sweep of a
    # worker routes it once the deadline passes.
    now = utcnow()
    msg, _ = rt.store.accept_request(req, now=now, deadline=later(rt.settings.ack_timeout_s, now))
    return str(msg.id)


@shared_task(bind=True, name=SEND_GROUP_TASK, throws=(InvalidMessage,), ignore_result=True,
             max_retries=None)
def send_group(
    self: Task,
    sender: Any,
    conversation: Any,
    body: Any,
    client_msg_id: Any = None,
    ttl_s: Any = None,
    stored: bool = False,
) -> str:
    """Store a group message (once: its seq and every recipient's row in one transaction),
    then route it: one task per group message. Returns the message id. Unknown conversation,
    a sender who is not a member: ``ConversationError`` (an ``InvalidMessage``), not retried.
    """
    rt = get_runtime()
    req = validate_group_send(
        sender, conversation, body, client_msg_id, ttl_s,
        max_body_bytes=rt.settings.max_body_bytes, default_ttl_s=rt.settings.message_ttl_s,
        max_body_depth=rt.settings.max_body_depth,
    )
    try:
        _store_and_route_group(rt, req, stored=bool(stored))
    except DB_UNAVAILABLE as exc:
        delay = retry_delay(self.request.retries)
        log.warning("send_group %s: database unavailable (%s); retrying in %.1fs",
                    req.message_id, type(exc).__name__, delay)
        raise self.retry(countdown=delay) from None
    return str(req.message_id)


def _store_and_route_group(rt: Runtime, req: GroupSendRequest, *, stored: bool) -> None:
    router = rt.router
    if stored and router is not None and router.route_group_stored(req.message_id):
        return  # stored by the producer: routed (its rows read once, no other lookup)
    if router is not None:
        router.accept_and_route_group(req)
        return
    # No router here: store only; the recovery sweep routes each recipient's row.
    now = utcnow()
    rt.store.accept_group(req, now=now, deadline=later(rt.settings.ack_timeout_s, now))


# The raw-Celery baseline of the end-to-end benchmark (bench/e2e.py): an empty task on
# the same broker, pool and workers, so the pipeline's throughput can be given as a ratio.
@shared_task(name=NOOP_TASK, ignore_result=True)
def noop() -> None:
    return None
