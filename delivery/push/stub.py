"""An FCM-compatible local HTTP server: the FCM v1 send endpoint, an OAuth token endpoint and a
control API, so the real firebase-admin code path can run offline.

Use it as a command (``delivery fcm-stub --port 9099``) or in-process (``FcmStub``)::

    stub = FcmStub().start()
    stub.fail_token("dead-token", "UNREGISTERED")      # always answer this token with an error
    stub.enqueue("UNAVAILABLE", retry_after=1)         # the next send gets a 503, Retry-After: 1
    ...                                                # DELIVERY_FCM_URL=stub.url
    stub.requests                                      # every send: path, headers, JSON body
    stub.stop()

Endpoints:

- ``POST /v1/projects/<project>/messages:send``: answers like FCM. Success:
  ``{"name": "projects/<project>/messages/<id>"}``; an error:
  ``{"error": {"code": 404, "message": ..., "status": "NOT_FOUND", "details": [{"@type":
  "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}``.
  A malformed request (no ``message``, not exactly one target) gets 400 INVALID_ARGUMENT.
- ``POST /token``: the OAuth 2.0 token endpoint a service-account JSON's ``token_uri`` can name
  (google-auth posts a signed JWT assertion; the stub does not check its signature).
- ``GET /_requests`` (sends), ``GET /_token_requests``, ``GET /_health``;
  ``POST /_control/reset``, ``POST /_control/token`` ``{"token": T, "error": CODE | null,
  "retry_after": S}``, ``POST /_control/next`` ``{"responses": [{"error": CODE, "retry_after": S,
  "delay_s": S} | {"ok": true}, ...]}``, ``POST /_control/auth`` ``{"require": true}``.

Every answer is written with one ``sendall`` on a TCP_NODELAY socket: headers and body in
separate writes would hit Nagle + delayed ACK (a ~40 ms stall per request).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM error code -> (HTTP status, canonical status) as the real service answers them.
FCM_ERRORS: dict[str, tuple[int, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}

_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")


@dataclass(frozen=True)
class Answer:
    """One scripted answer: ``error`` None means success."""

    error: str | None = None
    retry_after: float | None = None
    delay_s: float = 0.0

    @classmethod
    def parse(cls, spec: Any) -> Answer:
        if isinstance(spec, Answer):
            return spec
        if isinstance(spec, str):
            spec = {"error": None if spec.upper() == "OK" else spec}
        if not isinstance(spec, dict):
            raise ValueError(f"an answer is a code or an object, got {spec!r}")
        error = None if spec.get("ok") else spec.get("error")
        if error is not None:
            error = str(error).upper()
            if error not in FCM_ERRORS:
                raise ValueError(f"unknown FCM error {error!r}; one of {sorted(FCM_ERRORS)}")
        retry_after = spec.get("retry_after")
        return cls(
            error=error,
            retry_after=None if retry_after is None else float(retry_after),
            delay_s=float(spec.get("delay_s", 0.0)),
        )


@dataclass
class StubState:
    """What the stub recorded and what it was told to answer. Guarded by ``lock``."""

    require_auth: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    sends: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    issued_tokens: set[str] = field(default_factory=set)
    per_token: dict[str, Answer] = field(default_factory=dict)
    queue: deque[Answer] = field(default_factory=deque)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        with self.lock:
            self.sends.clear()
            self.token_requests.clear()
            self.per_token.clear()
            self.queue.clear()


def _error_body(code: int, status: str, message: str, fcm_code: str | None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if fcm_code is not None:
        err["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return {"error": err}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: requests' session reuses the connection
    server: _StubServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _reply(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 "Content-Type: application/json; charset=UTF-8",
                 f"Content-Length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        self.wfile.write(raw)  # one write: see the module docstring
        self.log_request(status)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/_health":
            self._reply(200, {"ok": True})
        elif self.path == "/_requests":
            with state.lock:
                self._reply(200, list(state.sends))
        elif self.path == "/_token_requests":
            with state.lock:
                self._reply(200, list(state.token_requests))
        else:
            self._reply(404, _error_body(404, "NOT_FOUND", f"no route {self.path}", None))

    def do_POST(self) -> None:
        raw = self._body()
        m = _SEND_PATH.match(self.path)
        if m:
            self._send(m.group(1), raw)
        elif self.path == "/token":
            self._token(raw)
        elif self.path.startswith("/_control/"):
            self._control(self.path[len("/_control/"):], self._json(raw))
        else:
            self._reply(404, _error_body(404, "NOT_FOUND", f"no route {self.path}", None))

    def _token(self, raw: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        state = self.server.state
        with state.lock:
            token = f"stub-access-{next(state.ids)}"
            state.issued_tokens.add(token)
            state.token_requests.append({"form": form, "token": token, "at": time.time()})
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get(
            "assertion"
        ):
            self._reply(400, {"error": "invalid_grant", "error_description": "bad grant"})
            return
        self._reply(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _send(self, project: str, raw: bytes) -> None:
        state = self.server.state
        body = self._json(raw)
        auth = self.headers.get("Authorization")
        record = {
            "path": self.path, "project": project, "body": body, "at": time.time(),
            "headers": {k: v for k, v in self.headers.items()}, "authorization": auth,
        }
        message = body.get("message") if isinstance(body, dict) else None
        target = None
        if isinstance(message, dict):
            targets = [k for k in ("token", "fid", "topic", "condition") if k in message]
            target = message[targets[0]] if len(targets) == 1 else None
        record["token"] = target
        with state.lock:
            state.sends.append(record)
            require_auth = state.require_auth
            authorized = bool(
                auth and auth.startswith("Bearer ") and auth[7:] in state.issued_tokens
            )
            answer = state.queue.popleft() if state.queue else state.per_token.get(str(target))
            msg_id = next(state.ids)
        if require_auth and not authorized:
            record["answer"] = "UNAUTHENTICATED"
            self._reply(401, _error_body(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", None))
            return
        if target is None:
            record["answer"] = "INVALID_ARGUMENT"
            self._reply(400, _error_body(
                400, "INVALID_ARGUMENT",
                "Request contains an invalid argument: exactly one target is required.",
                "INVALID_ARGUMENT"))
            return
        if answer is not None and answer.delay_s > 0:
            time.sleep(answer.delay_s)
        if answer is None or answer.error is None:
            record["answer"] = "OK"
            name = f"projects/{project}/messages/{msg_id}"
            if isinstance(body, dict) and body.get("validate_only"):
                name = f"projects/{project}/messages/fake_message_id"
            self._reply(200, {"name": name})
            return
        code, status = FCM_ERRORS[answer.error]
        headers = {}
        if answer.retry_after is not None:
            ra = answer.retry_after
            headers["Retry-After"] = str(int(ra)) if ra == int(ra) else str(ra)
        record["answer"] = answer.error
        self._reply(code, _error_body(code, status, f"stub: {answer.error}", answer.error),
                    headers)

    def _control(self, what: str, body: Any) -> None:
        state = self.server.state
        if not isinstance(body, dict):
            self._reply(400, {"error": "control bodies are JSON objects"})
            return
        try:
            if what == "reset":
                state.reset()
            elif what == "token":
                token = str(body["token"])
                with state.lock:
                    if body.get("error") is None:
                        state.per_token.pop(token, None)
                    else:
                        state.per_token[token] = Answer.parse(body)
            elif what == "next":
                answers = [Answer.parse(s) for s in body.get("responses", [])]
                with state.lock:
                    state.queue.extend(answers)
            elif what == "auth":
                with state.lock:
                    state.require_auth = bool(body.get("require", True))
            else:
                self._reply(404, {"error": f"unknown control {what!r}"})
                return
        except (KeyError, ValueError, TypeError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, {"ok": True})


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: StubState) -> None:
        self.state = state
        super().__init__(addr, _Handler)


class FcmStub:
    """The stub in-process (a test fixture): ``start()``, ``url``, ``requests``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, require_auth: bool = False):
        self.state = StubState(require_auth=require_auth)
        self._addr = (host, port)
        self._server: _StubServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FcmStub:
        self._server = _StubServer(self._addr, self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fcm-stub", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FcmStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stub is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The origin to put in DELIVERY_FCM_URL, e.g. ``http://127.0.0.1:9099``."""
        return f"http://{self._addr[0]}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # -- scripting ------------------------------------------------------------------------

    def fail_token(self, token: str, error: str | None, retry_after: float | None = None) -> None:
        """Always answer sends to ``token`` with ``error`` (None: succeed again)."""
        with self.state.lock:
            if error is None:
                self.state.per_token.pop(token, None)
            else:
                self.state.per_token[token] = Answer.parse(
                    {"error": error, "retry_after": retry_after})

    def enqueue(
        self, error: str | None = None, *, retry_after: float | None = None, delay_s: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next ``times`` sends (any token) get this answer, before per-token rules."""
        answer = Answer.parse({"error": error, "retry_after": retry_after, "delay_s": delay_s})
        with self.state.lock:
            self.state.queue.extend([answer] * times)

    def set_require_auth(self, require: bool = True) -> None:
        with self.state.lock:
            self.state.require_auth = require

    def reset(self) -> None:
        self.state.reset()

    # -- what it saw ------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.sends)

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.token_requests)

    def sends_to(self, token: str, *, ok_only: bool = False) -> list[dict[str, Any]]:
        return [r for r in self.requests
                if r["token"] == token and (not ok_only or r.get("answer") == "OK")]


def main(argv: list[str]) -> int:
    """``delivery fcm-stub [--host H] [--port P] [--require-auth]``."""
    parser = argparse.ArgumentParser(prog="delivery fcm-stub",
                                     description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9099, help="0 picks a free port")
    parser.add_argument("--require-auth", action="store_true",
                        help="answer 401 to sends without a bearer token issued by /token")
    args = parser.parse_args(argv)
    state = StubState(require_auth=args.require_auth)
    try:
        server = _StubServer((args.host, args.port), state)
    except OSError as exc:
        print(f"fcm-stub: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = server.server_address[1]
    print(f"fcm-stub listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
