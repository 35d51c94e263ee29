"""Celery tasks of the push path (stable names, shown as such in Flower).

- ``delivery.push`` kwargs ``{"message_id": "<uuid>", "attempt": <int>}``: enqueued by routing
  after it claimed the attempt (message ``dispatched`` with ``attempts == attempt``).
- ``delivery.register_device`` kwargs ``{"user": ..., "token": ..., "platform": ...}``.

Retry policy of ``delivery.push``: a transient FCM error retries the task with
``countdown = min(60 s, visibility timeout / 5,
max(Retry-After, DELIVERY_RETRY_BACKOFF_S * 2**n * U(0.5, 1)))``, at most
DELIVERY_PUSH_MAX_RETRIES times; the ack deadline is moved past the countdown first (CAS), so
the recovery sweep leaves the message alone meanwhile. The last allowed run treats transient
errors as final (the message becomes ``pending`` unless some device accepted it).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from delivery.push.devices import InvalidDevice, device_dict
from delivery.push.devices import register_device as _register_device
from delivery.push.service import (
    BACKOFF_CAP_S,
    PushOutcome,
    TransientPushError,
    defer,
    push_message,
    retry_countdown,
)
from delivery.runtime import get_runtime
from delivery.task_names import PUSH_TASK, REGISTER_DEVICE_TASK

__all__ = ["push", "push_message", "register_device"]


@shared_task(name=PUSH_TASK, bind=True, max_retries=None, acks_late=True)
def push(self: Any, message_id: str, attempt: int) -> str:
    """Push one attempt of a message to the recipient's devices; returns the outcome."""
    rt = get_runtime()
    max_retries = rt.settings.push_max_retries
    retries = int(self.request.retries or 0)
    try:
        return push_message(message_id, int(attempt), final=retries >= max_retries)
    except TransientPushError as exc:
        countdown = retry_countdown(
            retries, exc.retry_after, base_s=rt.settings.retry_backoff_s,
            cap_s=min(BACKOFF_CAP_S, rt.settings.visibility_timeout_s / 5),
        )
        if not defer(message_id, int(attempt), countdown):
            return PushOutcome.SKIPPED.value  # acked or re-routed meanwhile
        raise self.retry(countdown=countdown, max_retries=max_retries, exc=exc) from None


@shared_task(name=REGISTER_DEVICE_TASK, throws=(InvalidDevice,))
def register_device(user: Any, token: Any, platform: Any = "android") -> dict[str, Any]:
    """Register (or re-activate) a device token for ``user``; returns the device as a dict."""
    return device_dict(_register_device(user, token, platform))
