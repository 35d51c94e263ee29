"""The Starlette shell of ``delivery api``: ``POST /v1/messages``, ``/openapi.json``, ``/healthz``.

A send goes through :func:`delivery.api.send_message` with ``durable=True`` (stored in this
process's database transaction before the id is answered, then enqueued), so an HTTP producer
gets exactly the Python API's guarantee: 202 with the id means the message is durable; any
other answer means nothing was accepted unless it already had been (a retry with the same
``client_msg_id`` answers the same id and stores nothing twice).
"""

from __future__ import annotations

import json
import logging
from functools import cache, partial
from pathlib import Path
from typing import Any

import anyio
import yaml
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery import api as delivery_api
from delivery import metrics
from delivery.flow import retry_after_header
from delivery.httpapi.admission import RETRY_AFTER_S, Admission
from delivery.httpapi.auth import Auth, authorize
from delivery.httpapi.request import BadRequest, Send, parse_send
from delivery.runtime import get_runtime
from delivery.settings import Settings, get_settings
from delivery.validation import InvalidMessage

log = logging.getLogger("delivery.api.http")

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
# Seconds a producer is told to wait after a 503 (the database could not store the message).
UNAVAILABLE_RETRY_AFTER_S = 2


@cache
def openapi_document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return doc


def max_request_bytes(settings: Settings) -> int:
    """The largest request body read: room for the largest message body written with JSON
    escapes (\\uXXXX: 6 bytes a character) plus the other fields."""
    return settings.max_body_bytes * 6 + 4096


def _answer(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> JSONResponse:
    metrics.API_REQUESTS.labels(str(status)).inc()
    return JSONResponse(payload, status_code=status, headers=headers)


def _error(status: int, error: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return _answer(status, {"error": error, "field": field, "message": message}, headers)


class _TooLarge(Exception):
    pass


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _send(send: Send) -> str:
    """The blocking store-then-enqueue (runs in a worker thread). An unknown conversation or a
    sender who is not a member raises ``ConversationError``, an ``InvalidMessage``: 400."""
    if send.conversation is not None:
        # This process has the database (cli.check): stored before the id is returned.
        return delivery_api.send_to_conversation(
            send.sender, send.conversation, send.body, client_msg_id=send.client_msg_id,
            ttl_s=send.ttl_s)
    return delivery_api.send_message(send.sender, send.recipient, send.body,
                                     client_msg_id=send.client_msg_id, ttl_s=send.ttl_s,
                                     durable=True)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    keys = settings.api_key_list
    admission = Admission(settings.api_max_in_flight)
    limiter = anyio.CapacityLimiter(settings.api_max_in_flight)
    cap = max_request_bytes(settings)

    async def post_message(request: Request) -> Response:
        verdict = authorize(request.headers.get("authorization"), keys)
        if verdict is not Auth.OK:
            message = ("missing server key: send Authorization: Bearer KEY"
                       if verdict is Auth.MISSING else "server key not accepted")
            return _error(401, "unauthorized", message,
                          headers={"WWW-Authenticate": 'Bearer realm="delivery"'})
        if not admission.enter():
            return _error(429, "overloaded", f"{admission.limit} sends are being stored; "
                          "retry after the Retry-After seconds",
                          headers={"Retry-After": str(RETRY_AFTER_S)})
        metrics.API_IN_FLIGHT.set(admission.in_flight)
        try:
            return await _post(request)
        finally:
            admission.leave()
            metrics.API_IN_FLIGHT.set(admission.in_flight)

    async def _post(request: Request) -> Response:
        try:
            raw = await _read_capped(request, cap)
        except _TooLarge:
            return _error(413, "too_large", f"request body over {cap} bytes", "body")
        send = parse_send(raw)
        if isinstance(send, BadRequest):
            return _error(400, send.error, send.message, send.field)
        try:
            msg_id = await anyio.to_thread.run_sync(partial(_send, send), limiter=limiter)
        except InvalidMessage as exc:
            return _error(400, "invalid_field", str(exc), exc.field)
        except delivery_api.Overloaded as exc:
            # Flow control: the queue is over DELIVERY_MAX_BACKLOG; nothing was stored.
            return _error(503, "queue_full", str(exc),
                          headers={"Retry-After": retry_after_header(exc.retry_after_s)})
        except delivery_api.SendNotAccepted as exc:
            log.warning("send not accepted: %s", exc)
            return _error(503, "unavailable", str(exc),
                          headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
        return _answer(202, {"id": msg_id})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    def _db_ok() -> bool:
        try:
            get_runtime().store.ping()
        except SQLAlchemyError:
            return False
        return True

    async def healthz(request: Request) -> Response:
        ok = await anyio.to_thread.run_sync(_db_ok, limiter=limiter)
        return Response(json.dumps({"database": "ok" if ok else "unreachable"}),
                        status_code=200 if ok else 503, media_type="application/json")

    return Starlette(routes=[
        Route("/v1/messages", post_message, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
