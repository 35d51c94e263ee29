"""The Python interface for the chat application: send a message, get its id back.

The guarantee (README, "The guarantee"): when ``send_message`` returns an id, the message is
durable; when it cannot make it durable it raises, and nothing was accepted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from delivery import flow_gate
from delivery.celery_app import producer_app
from delivery.clock import later, utcnow
from delivery.configs import flow_config
from delivery.conversations.ids import (
    ConversationError,
    check_group_id,
    check_users,
    dm_conversation_id,
)
from delivery.conversations.requests import validate_group_send
from delivery.flow import Refuse
from delivery.runtime import get_runtime
from delivery.settings import Settings, get_settings
from delivery.store import Store
from delivery.task_names import SEND_GROUP_TASK, SEND_TASK
from delivery.validation import message_id_for, validate_send

__all__ = [
    "ConversationError", "Overloaded", "SendNotAccepted", "add_members", "create_conversation",
    "dm_conversation_id", "remove_members", "send_message", "send_to_conversation",
]

log = logging.getLogger("delivery.api")

# Publishing after the message is stored: a few quick tries, then leave it to the recovery
# sweep (the stored message is routed once its deadline passes), so a broker outage never
# blocks the caller for long nor loses a stored message.
STORED_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2,
                        "interval_max": 0.5}


class SendNotAccepted(RuntimeError):
    """The message could not be made durable (the store is unreachable): nothing was accepted.

    Retry later with the same ``client_msg_id``: the retry is stored and delivered once."""


class Overloaded(SendNotAccepted):
    """The broker queue the send would wait in holds ``DELIVERY_MAX_BACKLOG`` tasks or more
    (the workers are saturated or stopped): refused before anything was stored.

    Retry after ``retry_after_s`` seconds with the same ``client_msg_id``."""

    def __init__(self, backlog: int, bound: int, retry_after_s: float) -> None:
        self.backlog, self.bound, self.retry_after_s = backlog, bound, retry_after_s
        super().__init__(
            f"message not accepted: overloaded ({backlog} tasks queued, bound "
            f"DELIVERY_MAX_BACKLOG={bound}); nothing was stored — retry after "
            f"{retry_after_s:.1f} s with the same client_msg_id")


def _admit(celery: Celery, task_name: str, kwargs: dict[str, Any],
           settings: Settings) -> None:
    """Flow control (delivery/flow.py): raise :class:`Overloaded` while the task's queue is
    over the bound. Before anything is stored: a refused send was never accepted."""
    verdict = flow_gate.check(celery, task_name, kwargs, flow_config(settings))
    if isinstance(verdict, Refuse):
        raise Overloaded(verdict.backlog, verdict.bound, verdict.retry_after_s)


def stores_first(settings: Settings) -> bool:
    """Whether a producer with these settings stores messages itself before enqueueing.

    True when it has the database the workers use: an explicit ``DELIVERY_DATABASE_URL``, or
    the embedded default (one process, one SQLite file). A producer configured with only a
    broker (no database URL) enqueues, and the send task stores the message (retrying while
    the database is down); then durability rests on the broker — see docs/routing.md."""
    return bool(settings.database_url) or settings.embedded


def _in_process(app: Celery | None) -> bool:
    """An app on the in-process broker (or none): the embedded default, one database. An app
    on a real broker in a process whose settings are embedded means these settings do not
    describe the cluster, so its database is not this process's SQLite file."""
    return app is None or str(app.conf.broker_url or "").startswith("memory://")


def send_message(
    sender: str,
    recipient: str,
    body: Any,
    *,
    client_msg_id: str | None = None,
    ttl_s: float | None = None,
    app: Celery | None = None,
    durable: bool | None = None,
    store: Store | None = None,
) -> str:
    """Validate, make the message durable, enqueue ``delivery.send``; return the message id.

    By default (``durable=None``) the message is stored here before it is enqueued whenever
    this process has the database (see :func:`stores_first`; a ``store`` given counts; an
    ``app`` on a real broker with no ``DELIVERY_DATABASE_URL`` here does not): the
    id returned is then durable whatever happens to the broker, and a database that cannot be
    reached raises :class:`SendNotAccepted`. ``durable=False`` only enqueues (one write less
    here; the task stores it). ``app`` defaults to the project's Celery app built from the
    ``DELIVERY_*`` settings.

    Without a ``client_msg_id`` one is generated; a retried call with the same
    ``client_msg_id`` is stored and delivered once.
    """
    settings = get_settings()
    cmid = client_msg_id if client_msg_id is not None else uuid.uuid4().hex
    req = validate_send(
        sender, recipient, body, cmid, ttl_s,
        max_body_bytes=settings.max_body_bytes, default_ttl_s=settings.message_ttl_s,
        max_body_depth=settings.max_body_depth,
    )
    msg_id = str(message_id_for(req.sender, req.client_msg_id))
    kwargs: dict[str, Any] = {"sender": req.sender, "recipient": req.recipient, "body": req.body,
                              "client_msg_id": req.client_msg_id}
    if ttl_s is not None:
        kwargs["ttl_s"] = req.ttl_s
    if durable is None:
        durable = store is not None or (stores_first(settings)
                                        and (not settings.embedded or _in_process(app)))
    celery = app or producer_app()
    _admit(celery, SEND_TASK, kwargs, settings)
    if not durable:
        # ignore_result: nobody waits for it, and the Redis result backend would otherwise
        # subscribe to (and later unsubscribe from) a result channel per message.
        celery.send_task(SEND_TASK, kwargs=kwargs, ignore_result=True)
        return msg_id
    now = utcnow()
    try:
        (store or get_runtime().store).accept_request(
            req, now=now, deadline=later(settings.ack_timeout_s, now))
    except SQLAlchemyError as exc:
        raise SendNotAccepted(
            f"message not accepted: the store is unavailable ({type(exc).__name__}); "
            "nothing was stored — retry later with the same client_msg_id") from None
    kwargs["stored"] = True
    try:
        celery.send_task(SEND_TASK, kwargs=kwargs, ignore_result=True,
                         retry=True, retry_policy=STORED_PUBLISH_RETRY)
    except Exception as exc:  # the broker is down: the stored message is the sweep's now
        log.warning("message %s stored; enqueueing failed (%s), the recovery sweep routes it",
                    msg_id, type(exc).__name__)
    return msg_id


# -- conversations (docs/routing.md, "Conversations") ------------------------------------------


def _store(store: Store | None) -> Store:
    return store or get_runtime().store


def _unavailable(exc: SQLAlchemyError, what: str) -> SendNotAccepted:
    return SendNotAccepted(f"{what} not accepted: the store is unavailable "
                           f"({type(exc).__name__}); nothing was stored — retry later")


def create_conversation(conv_id: str, members: list[str], *, store: Store | None = None) -> bool:
    """Create a group conversation with these members (each receives every message from now
    on). True if created; False if it exists already with exactly these members (a retried
    create). :class:`ConversationError`: a bad id or member list, more than
    ``DELIVERY_MAX_CONVERSATION_MEMBERS`` members, or it exists with other members; nothing
    is stored then."""
    cid = check_group_id(conv_id)
    users = check_users("members", members)
    try:
        return _store(store).create_conversation(
            cid, users, now=utcnow(), limit=get_settings().max_conversation_members)
    except SQLAlchemyError as exc:
        raise _unavailable(exc, "conversation") from None


def add_members(conv_id: str, users: list[str], *, store: Store | None = None) -> list[str]:
    """Add members: they receive the messages sent after this call returns (not earlier
    ones). Returns those added (the others were members already)."""
    cid = check_group_id(conv_id)
    new = check_users("users", users)
    try:
        return _store(store).add_members(cid, new, now=utcnow(),
                                         limit=get_settings().max_conversation_members)
    except SQLAlchemyError as exc:
        raise _unavailable(exc, "membership change") from None


def remove_members(conv_id: str, users: list[str], *, store: Store | None = None) -> list[str]:
    """Remove members: they receive no message sent after this call returns (those sent
    before are still delivered). Returns those removed (the others were not members)."""
    cid = check_group_id(conv_id)
    gone = check_users("users", users)
    try:
        return _store(store).remove_members(cid, gone, now=utcnow())
    except SQLAlchemyError as exc:
        raise _unavailable(exc, "membership change") from None


def send_to_conversation(
    sender: str,
    conv_id: str,
    body: Any,
    *,
    client_msg_id: str | None = None,
    ttl_s: float | None = None,
    app: Celery | None = None,
    store: Store | None = None,
) -> str:
    """Send to every member of a group conversation but the sender; return the message id.

    The same guarantee as :func:`send_message`: with the database here (see
    :func:`stores_first`), the message and all its recipients' rows are stored (one
    transaction, the conversation's next seq) before this returns, and one
    ``delivery.send_group`` task routes them; an unreachable store raises
    :class:`SendNotAccepted`. An unknown conversation or a sender who is not a member raises
    :class:`ConversationError` (nothing stored) — on a producer without the database the task
    finds that out instead, and the message is dropped with that error in the worker's log.
    A retried call with the same ``client_msg_id`` is stored and delivered once.
    """
    settings = get_settings()
    cmid = client_msg_id if client_msg_id is not None else uuid.uuid4().hex
    req = validate_group_send(
        sender, conv_id, body, cmid, ttl_s, max_body_bytes=settings.max_body_bytes,
        default_ttl_s=settings.message_ttl_s, max_body_depth=settings.max_body_depth)
    kwargs: dict[str, Any] = {"sender": req.sender, "conversation": req.conversation,
                              "body": req.body, "client_msg_id": req.client_msg_id}
    if ttl_s is not None:
        kwargs["ttl_s"] = req.ttl_s
    durable = store is not None or (stores_first(settings)
                                    and (not settings.embedded or _in_process(app)))
    celery = app or producer_app()
    _admit(celery, SEND_GROUP_TASK, kwargs, settings)
    if not durable:
        celery.send_task(SEND_GROUP_TASK, kwargs=kwargs, ignore_result=True)
        return str(req.message_id)
    now = utcnow()
    try:
        _store(store).accept_group(req, now=now, deadline=later(settings.ack_timeout_s, now))
    except SQLAlchemyError as exc:
        raise _unavailable(exc, "message") from None
    kwargs["stored"] = True
    try:
        celery.send_task(SEND_GROUP_TASK, kwargs=kwargs, ignore_result=True,
                         retry=True, retry_policy=STORED_PUBLISH_RETRY)
    except Exception as exc:  # the broker is down: the stored rows are the sweep's now
        log.warning("group message %s stored; enqueueing failed (%s), the recovery sweep "
                    "routes it", req.message_id, type(exc).__name__)
    return str(req.message_id)
