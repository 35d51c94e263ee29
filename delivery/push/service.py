"""The push step without Celery: ``push_message(message_id, attempt)``.

Routing has already claimed the attempt (the message is ``dispatched`` with
``attempts == attempt``). This sends the message to every active device of the recipient that
has not already got it in this attempt, records one attempt row per device, disables tokens FCM
rejected, and decides the attempt's single outcome with a compare-and-set:

- at least one device accepted            -> ``pushed`` (``pushed_at``; replayed until acked)
- no active device                        -> ``pending``, ``last_error="no active device"``
- every device failed / retries exhausted -> ``pending`` with ``last_error``

Transient FCM errors (UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED, timeouts) raise
``TransientPushError(retry_after)`` unless ``final=True``; the caller retries later (the Celery
task does, with backoff) and the retry sends only to the devices that have no final result yet.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

from firebase_admin import messaging

from delivery.clock import later, utcnow
from delivery.push.fcm import (
    TRANSIENT_CODES,
    FcmSender,
    PushNotConfigured,
    SendResult,
    get_sender,
    token_ref,
)
from delivery.runtime import Runtime, get_runtime
from delivery.store import MessageRecord
from delivery.store import push as push_store
from delivery.vocabulary import FCM_PREFIX, Result

log = logging.getLogger(__name__)

PREVIEW_CHARS = 100
BACKOFF_CAP_S = 60.0  # well under Redis' visibility timeout (300 s by default)
SEND_BUDGET_S = 15.0  # lease on the ack deadline while a send is in progress


class PushOutcome(StrEnum):
    PUSHED = "pushed"  # state pushed: at least one device accepted
    NO_DEVICE = "no_device"  # state pending: the recipient has no active device
    FAILED = "failed"  # state pending: every device failed, or transient errors persisted
    SKIPPED = "skipped"  # nothing done: acked meanwhile, a newer attempt, or decided already
    BUSY = "busy"  # nothing done: another execution of this attempt holds the lease


class TransientPushError(Exception):
    """Some devices got a transient FCM error: retry after ``retry_after`` seconds at least."""

    def __init__(self, retry_after: float | None, codes: Sequence[str]) -> None:
        self.retry_after = retry_after
        self.codes = sorted(set(codes))
        # args mirror __init__ so Celery can rebuild it from its serialised form.
        super().__init__(retry_after, self.codes)

    def __str__(self) -> str:
        return f"transient FCM errors {self.codes} (Retry-After {self.retry_after})"



def preview(body: Any, limit: int = PREVIEW_CHARS) -> str:
    """A short text for the notification: the body if it is a string, its ``text`` field if it
    has one, else compact JSON; cut to ``limit`` characters with an ellipsis."""
    if isinstance(body, str):
        text = body
    elif isinstance(body, dict) and isinstance(body.get("text"), str):
        text = body["text"]
    else:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def build_message(msg: MessageRecord, token: str) -> messaging.Message:
    """One FCM message for one device token.

    The data payload carries ``message_id``, ``sender``, ``preview`` and ``sent_at`` (all
    strings, as FCM requires); a notification title/body; the message id as the Android
    notification tag, APNs collapse id and web-push tag, so a repeated push replaces the
    notification instead of showing a second one.
    """
    mid = str(msg.id)
    text = preview(msg.body)
    remaining = max(0, int((msg.expires_at - utcnow()).total_seconds()))
    m = messaging.Message(
        data={"message_id": mid, "sender": msg.sender, "preview": text,
              "sent_at": msg.created_at.isoformat()},
        notification=messaging.Notification(title=msg.sender, body=text),
        android=messaging.AndroidConfig(
            priority="high", ttl=timedelta(seconds=min(remaining, 28 * 24 * 3600)),
            notification=messaging.AndroidNotification(tag=mid),
        ),
        apns=messaging.APNSConfig(headers={"apns-collapse-id": mid}),
        webpush=messaging.WebpushConfig(notification=messaging.WebpushNotification(tag=mid)),
    )
    # Registration tokens go in the v1 API's "token" field; 7.7 deprecates the constructor
    # argument in favour of "fid" (a different identifier), so set the attribute instead.
    m.token = token
    return m


_RETRYABLE_RESULTS = frozenset(f"{FCM_PREFIX}{c}" for c in (*TRANSIENT_CODES, "UNKNOWN"))


def _is_final(result: str | None) -> bool:
    """A device with a final result in this attempt (accepted, or given up on) is not sent to
    again; one with no result yet or a transient one is."""
    return result is not None and result not in _RETRYABLE_RESULTS


def _sender_for(rt: Runtime) -> FcmSender:
    injected = rt.hooks.fcm_sender
    return injected if injected is not None else get_sender(rt.settings)


def push_message(
    message_id: str, attempt: int, *, final: bool = False, runtime: Runtime | None = None
) -> str:
    """Push attempt ``attempt`` of ``message_id``; return a ``PushOutcome`` value.

    Idempotent by (message id, attempt): does nothing unless the message is ``dispatched`` with
    ``attempts == attempt``; never sends twice to a device that already accepted it in this
    attempt; decides the outcome with one compare-and-set. Raises ``TransientPushError`` when a
    device got a transient error and ``final`` is False.
    """
    rt = runtime or get_runtime()
    store = rt.store
    mid = uuid.UUID(str(message_id))
    with push_store.push_lease(store, mid, attempt) as held:
        if not held:
            return PushOutcome.BUSY
        started = utcnow()
        # Check state + attempt and keep the recovery sweep away while we talk to FCM.
        deadline = later(SEND_BUDGET_S + rt.settings.ack_timeout_s, started)
        msg = push_store.claim_for_push(store, mid, attempt, deadline)
        if msg is None:
            return PushOutcome.SKIPPED
        outcome = _push_locked(rt, msg, attempt, final=final, started=started)
    if outcome is not None:
        hook = rt.hooks.on_push
        if hook is not None:
            try:
                hook(str(mid), outcome.value)
            except Exception:  # a demo/bench hook must not turn a decided push into a failure
                log.exception("on_push hook failed for %s", mid)
        return outcome.value
    return PushOutcome.SKIPPED.value


def _push_locked(
    rt: Runtime, msg: MessageRecord, attempt: int, *, final: bool, started: Any
) -> PushOutcome | None:
    store = rt.store
    prior, devices = push_store.push_targets(store, msg.id, attempt, msg.recipient)
    ok_before = sum(1 for r in prior.values() if r == Result.FCM_OK)
    todo = [d for d in devices if not _is_final(prior.get(token_ref(d.token)))]

    if not devices and not ok_before:
        reasons = sorted({r for r in prior.values() if r.startswith(FCM_PREFIX)})
        detail = "no active device" + (f" (tokens rejected: {', '.join(reasons)})"
                                       if reasons else "")
        return _decide(rt, msg, attempt, pushed=False, result=Result.NO_DEVICE, detail=detail,
                       last_error="no active device", outcome=PushOutcome.NO_DEVICE)

    results: list[SendResult] = []
    if todo:
        try:
            sender = _sender_for(rt)
        except PushNotConfigured as exc:
            log.warning("push %s: %s", msg.id, exc)
            results = [SendResult(d.token, "failed", "NOT_CONFIGURED", str(exc)[:500])
                       for d in todo]
        else:
            results = sender.send([(d.token, build_message(msg, d.token)) for d in todo])
    now = utcnow()
    push_store.record_device_results(
        store, msg.id, attempt,
        [(token_ref(r.token), r.result,
          r.detail if r.retry_after is None else f"{r.detail} (Retry-After {r.retry_after:g}s)")
         for r in results],
        started_at=started, now=now,
        disable=[(r.token, r.code) for r in results if r.kind == "invalid"],
    )
    ok = ok_before + sum(1 for r in results if r.kind == "ok")
    transient = [r for r in results if r.kind == "transient"]
    if transient and not final:
        after = [r.retry_after for r in transient if r.retry_after is not None]
        raise TransientPushError(max(after) if after else None, [r.code for r in transient])

    if ok:
        failed = len(results) - sum(1 for r in results if r.kind == "ok")
        detail = f"{ok} device(s) accepted" + (f", {failed} failed" if failed else "")
        return _decide(rt, msg, attempt, pushed=True, result=Result.PUSHED, detail=detail,
                       outcome=PushOutcome.PUSHED)
    codes = sorted({r.code for r in results}) or sorted(
        {r.removeprefix(FCM_PREFIX) for r in prior.values()})
    if all(r.kind == "invalid" for r in results) and results:
        error = f"no active device (tokens rejected: {', '.join(codes)})"
    elif transient:
        error = f"push failed after retries: {', '.join(codes)}"
    else:
        error = f"push failed: {', '.join(codes)}"
    return _decide(rt, msg, attempt, pushed=False, result=Result.PUSH_FAILED, detail=error,
                   last_error=error, outcome=PushOutcome.FAILED)


def _decide(
    rt: Runtime, msg: MessageRecord, attempt: int, *, pushed: bool, result: str, detail: str,
    outcome: PushOutcome, last_error: str | None = None,
) -> PushOutcome | None:
    won = push_store.finish_push(rt.store, msg.id, attempt, pushed=pushed, now=utcnow(),
                                result=result, detail=detail, last_error=last_error)
    return outcome if won else None


def retry_countdown(
    retries: int, retry_after: float | None, *, base_s: float, cap_s: float = BACKOFF_CAP_S,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter, at least Retry-After, at most ``cap_s``.

    ``base_s * 2**retries`` scaled by a random factor in [0.5, 1.0] ("equal jitter"), raised to
    ``retry_after`` when the server asked for longer, then capped (the cap keeps a countdown
    task well inside Redis' visibility timeout).
    """
    r = rng or random
    backoff = max(base_s, 0.01) * (2 ** min(retries, 30)) * r.uniform(0.5, 1.0)
    if retry_after is not None:
        backoff = max(backoff, retry_after)
    return float(min(backoff, cap_s))


def defer(
    message_id: str, attempt: int, countdown: float, *, runtime: Runtime | None = None
) -> bool:
    """Before a retry: move the ack deadline past the countdown (CAS on dispatched + attempt) so
    the recovery sweep does not re-route the message meanwhile. False: it moved on; drop it."""
    rt = runtime or get_runtime()
    deadline = later(countdown + SEND_BUDGET_S + rt.settings.ack_timeout_s)
    return push_store.extend_deadline(rt.store, uuid.UUID(str(message_id)), attempt, deadline)
