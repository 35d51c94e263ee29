"""``delivery up``'s development-only send endpoint: the demo page sends as its signed-in user.

The gateway's WebSocket server takes no request bodies, and the producer endpoint takes a
server key, which a page must never hold. For local development only, ``delivery up`` starts
this small HTTP endpoint next to its gateway (``--dev-api-port``, default the gateway's port
+ 1; ``--no-dev-api``: off). It is part of no production role (``delivery gateway`` and
``delivery worker`` never start it). Each request carries the user's gateway token
(``Authorization: Bearer TOKEN``), verified as the gateway verifies it; the message is sent
*from that user* through :mod:`delivery.api`, exactly as a chat backend would:

- ``POST /v1/messages`` ``{"conversation": C | "to": USER, "body": ANY, "client_msg_id": ID}``
  -> ``201 {"id": MESSAGE_ID, "conversation": C}``.

Browsers may call it only from the gateway pages' origins (CORS; any other ``Origin`` gets 403;
requests without one, e.g. curl, are allowed). Errors: 400 bad input (the message says which
field), 401 missing or bad token, 403 origin, 404 path, 405 method, 413 body over 64 KiB,
503 store unavailable (nothing stored; retry with the same ``client_msg_id``).

:func:`decide` is the pure part (request in, decision out); :class:`DevApi` is the HTTP shell.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

log = logging.getLogger("delivery.dev_api")

MAX_BODY_BYTES = 64 * 1024
MESSAGES_PATH = "/v1/messages"


class SendDirect(NamedTuple):
    sender: str
    recipient: str
    body: Any
    client_msg_id: str | None


class SendToConversation(NamedTuple):
    sender: str
    conversation: str
    body: Any
    client_msg_id: str | None


class Preflight(NamedTuple):
    """A CORS preflight from an allowed origin."""


class Refused(NamedTuple):
    status: int
    message: str


Decision = SendDirect | SendToConversation | Preflight | Refused


def decide(method: str, path: str, headers: Mapping[str, str], body: bytes, *,
           origins: Collection[str], verify: Callable[[str], str]) -> Decision:
    """What to do with one request. ``verify(token)`` returns the user or raises ValueError."""
    origin = headers.get("origin")
    if origin is not None and origin not in origins:
        return Refused(403, "origin not allowed")
    if path.split("?", 1)[0] != MESSAGES_PATH:
        return Refused(404, "not found")
    if method == "OPTIONS":
        return Preflight()
    if method != "POST":
        return Refused(405, "method not allowed")
    if len(body) > MAX_BODY_BYTES:
        return Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refused(401, "Authorization: Bearer <gateway token> required")
    try:
        user = verify(token.strip())
    except ValueError as exc:
        return Refused(401, f"token refused: {exc}")
    try:
        req = json.loads(body)
    except ValueError:
        return Refused(400, "body is not valid JSON")
    if not isinstance(req, dict):
        return Refused(400, "body must be a JSON object")
    cmid = req.get("client_msg_id")
    if cmid is not None and not isinstance(cmid, str):
        return Refused(400, "client_msg_id must be a string")
    if "body" not in req:
        return Refused(400, "body: missing")
    conversation, to = req.get("conversation"), req.get("to")
    if (conversation is None) == (to is None):
        return Refused(400, "give exactly one of conversation or to")
    if conversation is not None:
        if not isinstance(conversation, str):
            return Refused(400, "conversation must be a string")
        return SendToConversation(user, conversation, req["body"], cmid)
    if not isinstance(to, str):
        return Refused(400, "to must be a string")
    return SendDirect(user, to, req["body"], cmid)


# Sends one decided request; returns (message id, conversation id). ValueError: bad input.
Sender = Callable[[SendDirect | SendToConversation], tuple[str, str]]


class DevApi:
    """The HTTP shell: a threaded stdlib server on ``host:port`` (0: any free port)."""

    def __init__(self, host: str, port: int, *, origins: Collection[str],
                 verify: Callable[[str], str], send: Sender) -> None:
        self.origins = frozenset(origins)
        self.verify = verify
        self.send = send
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                api._handle(self)

            def do_OPTIONS(self) -> None:
                api._handle(self)

            def do_GET(self) -> None:
                api._handle(self)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("dev api: " + fmt, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DevApi:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dev-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._reply(h, 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        decision = decide(h.command, h.path, headers, body, origins=self.origins,
                          verify=self.verify)
        if isinstance(decision, Refused):
            self._reply(h, decision.status, {"error": decision.message})
        elif isinstance(decision, Preflight):
            self._reply(h, 204, None)
        else:
            self._send(h, decision)

    def _send(self, h: BaseHTTPRequestHandler, req: SendDirect | SendToConversation) -> None:
        from delivery.api import SendNotAccepted

        try:
            msg_id, conversation = self.send(req)
        except SendNotAccepted as exc:
            self._reply(h, 503, {"error": str(exc)})
        except ValueError as exc:  # validation: the message names the field
            self._reply(h, 400, {"error": str(exc)})
        except Exception:
            log.exception("dev api: send failed")
            self._reply(h, 500, {"error": "internal error (logged)"})
        else:
            self._reply(h, 201, {"id": msg_id, "conversation": conversation})

    def _reply(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        h.send_response(status)
        origin = h.headers.get("Origin")
        if origin is not None and origin in self.origins:
            h.send_header("Access-Control-Allow-Origin", origin)
            h.send_header("Vary", "Origin")
            h.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            h.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            h.send_header("Access-Control-Max-Age", "600")
        if payload is not None:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        if data:
            h.wfile.write(data)


def page_origins(host: str, port: int) -> set[str]:
    """The origins a browser gives the gateway's page at ``host:port``."""
    names = {host}
    if host in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return {f"http://{n}:{port}" for n in names}


def api_sender(app: Any) -> Sender:
    """Send through :mod:`delivery.api` on the Celery ``app`` (what ``delivery up`` runs)."""
    from delivery.api import send_message, send_to_conversation
    from delivery.conversations.ids import dm_conversation_id

    def send(req: SendDirect | SendToConversation) -> tuple[str, str]:
        if isinstance(req, SendDirect):
            msg_id = send_message(req.sender, req.recipient, req.body,
                                  client_msg_id=req.client_msg_id, app=app)
            return msg_id, dm_conversation_id(req.sender, req.recipient)
        msg_id = send_to_conversation(req.sender, req.conversation, req.body,
                                      client_msg_id=req.client_msg_id, app=app)
        return msg_id, req.conversation

    return send
