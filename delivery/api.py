"""The Python interface for the chat application: enqueue a send, get the message id back."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, current_app

from delivery.clock import later, utcnow
from delivery.runtime import get_runtime
from delivery.settings import get_settings
from delivery.store import Store
from delivery.task_names import SEND_TASK
from delivery.validation import message_id_for, validate_send

# Flower and logs see this instead of the message body.
REDACTED = "<redacted>"


def send_message(
    sender: str,
    recipient: str,
    body: Any,
    *,
    client_msg_id: str | None = None,
    ttl_s: float | None = None,
    app: Celery | None = None,
    durable: bool = False,
    store: Store | None = None,
) -> str:
    """Validate here (fail fast, nothing enqueued), enqueue ``delivery.send``, return the id.

    Without a ``client_msg_id`` one is generated, so the id is known before the worker runs
    and a retried call with the same ``client_msg_id`` is stored and delivered once.

    ``durable=True`` stores the message here first (this process needs the database; pass
    ``store`` or configure DELIVERY_DATABASE_URL), so it survives even a broker that loses the
    task — e.g. Redis restarting while a worker's BRPOP reply is in flight, which kombu's Redis
    transport cannot recover. The worker then routes the stored message; if the task is lost,
    the recovery sweep does, after the ack deadline. It costs one more database write.
    """
    settings = get_settings()
    cmid = client_msg_id if client_msg_id is not None else uuid.uuid4().hex
    req = validate_send(
        sender, recipient, body, cmid, ttl_s,
        max_body_bytes=settings.max_body_bytes, default_ttl_s=settings.message_ttl_s,
    )
    kwargs: dict[str, Any] = {"sender": req.sender, "recipient": req.recipient, "body": req.body,
                              "client_msg_id": req.client_msg_id}
    if ttl_s is not None:
        kwargs["ttl_s"] = req.ttl_s
    if durable:
        now = utcnow()
        (store or get_runtime().store).accept_request(
            req, now=now, deadline=later(settings.ack_timeout_s, now))
    # ignore_result: nobody waits for it, and the Redis result backend would otherwise
    # subscribe to (and later unsubscribe from) a result channel per message.
    (app or current_app).send_task(SEND_TASK, kwargs=kwargs, ignore_result=True)
    return str(message_id_for(req.sender, req.client_msg_id))
