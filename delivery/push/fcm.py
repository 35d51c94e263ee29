"""The FCM sender: firebase-admin's ``messaging.send_each`` on a named app, and the mapping of
each per-device answer to ok / invalid token / transient / failed.

Configuration (see docs/push.md):

- credentials: DELIVERY_FCM_CREDENTIALS, else GOOGLE_APPLICATION_CREDENTIALS: a service-account
  JSON file (or the JSON itself). Its ``token_uri`` is honoured, so a locally generated key whose
  ``token_uri`` names a local server runs the whole google-auth token flow offline. Without
  either, and with DELIVERY_FCM_URL set, ``AnonymousCredentials`` (no Authorization header).
  ``FcmSender(config, credential=...)`` also takes a google.auth or firebase credentials object.
- project: DELIVERY_FCM_PROJECT, else the JSON's ``project_id``.
- DELIVERY_FCM_URL: an origin (``http://127.0.0.1:9099``); sends then go to
  ``<origin>/v1/projects/<project>/messages:send``.

How the endpoint is overridden (firebase-admin 7.7, ``messaging._MessagingService``): the class
attribute ``FCM_URL`` is formatted into the *instance* attribute ``_fcm_url`` in ``__init__``,
and ``send``/``send_each`` read ``self._fcm_url``. The service is created once per app and
cached on it. We create our app's service eagerly and set ``_fcm_url`` on that instance only,
so other firebase apps in the process (and the class attribute) are untouched.

SDK-level retries: ``HttpClient`` mounts a urllib3 ``Retry(status=4, status_forcelist=[500,
503])`` adapter on ``http://`` and ``https://`` (and again on ``https://fcm.googleapis.com``);
urllib3 also honours ``Retry-After`` on 429/503. That would block a worker thread for seconds
inside ``send_each`` and retry behind our back, so for our app's FCM origin we mount an adapter
that retries only failed *connects* (nothing was sent). Retries are the push task's job
(Celery countdown, bounded, honouring Retry-After), see ``delivery.push.tasks``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import firebase_admin
import requests
from firebase_admin import credentials as fb_credentials
from firebase_admin import exceptions as fb_exceptions
from firebase_admin import messaging
from google.auth.credentials import AnonymousCredentials
from google.auth.credentials import Credentials as GoogleCredentials
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from delivery.settings import Settings
from delivery.vocabulary import FCM_PREFIX

GOOGLE_FCM_ORIGIN = "https://fcm.googleapis.com"
DEFAULT_TIMEOUT_S = 10.0
MAX_BATCH = 500  # send_each's limit

Kind = Literal["ok", "invalid", "transient", "failed"]

# FCM error codes (details[].errorCode) and canonical statuses, by what we do about them.
INVALID_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH", "INVALID_ARGUMENT",
                                 "NOT_FOUND"})
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED",
                             "DEADLINE_EXCEEDED"})
INVALID_TOKEN_STATUS = frozenset({400, 404})
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class PushNotConfigured(RuntimeError):
    """No FCM credentials and no DELIVERY_FCM_URL: pushes cannot be sent from this process."""


@dataclass(frozen=True)
class SendResult:
    """What FCM answered for one device."""

    token: str
    kind: Kind
    code: str  # "ok" or the FCM error code (UNREGISTERED, UNAVAILABLE, ...)
    detail: str  # the FCM message name, or the error message
    retry_after: float | None = None

    @property
    def result(self) -> str:
        """The attempt row's result: ``fcm:ok``, ``fcm:UNREGISTERED``, ..."""
        return f"{FCM_PREFIX}{self.code}"


def token_ref(token: str) -> str:
    """A short, stable reference to a device token (attempt rows, logs): tokens are secrets-ish
    and up to 4 KB long, the attempt's ``conn`` column holds 128 characters."""
    return "dev:" + hashlib.sha256(token.encode()).hexdigest()[:20]


# -- classification ---------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _fcm_error_code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return None
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    status = err.get("status")
    return str(status) if status else None


def classify(token: str, exc: BaseException) -> SendResult:
    """Map one send's exception (a ``FirebaseError`` from firebase-admin) to what we do.

    The FCM error code comes from the response's ``details[].errorCode`` (what firebase-admin
    maps to ``UnregisteredError`` etc.), else the canonical status, else the exception's code;
    the HTTP status decides when neither is known. ``Retry-After`` is read from
    ``exc.http_response.headers`` (a ``requests.Response``).
    """
    response = getattr(exc, "http_response", None)
    status: int | None = getattr(response, "status_code", None)
    code: str | None = _fcm_error_code(response) if response is not None else None
    if code is None and isinstance(exc, fb_exceptions.FirebaseError):
        code = exc.code
    code = code or "UNKNOWN"
    retry_after = None
    if response is not None:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    kind: Kind
    if code in INVALID_TOKEN_CODES or (code == "UNKNOWN" and status in INVALID_TOKEN_STATUS):
        kind = "invalid"
    elif (code in TRANSIENT_CODES or status in TRANSIENT_STATUS
          or (status is None and code == "UNKNOWN")
          or (status is not None and status >= 500)):
        kind = "transient"
    else:  # THIRD_PARTY_AUTH_ERROR, UNAUTHENTICATED, PERMISSION_DENIED: not the token's fault
        kind = "failed"
    detail = str(exc) or type(exc).__name__
    return SendResult(token, kind, code, detail[:500], retry_after)


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FcmConfig:
    project: str
    url: str = ""  # origin override; "" = Google
    credentials: str = ""  # service-account JSON path or JSON text; "" = anonymous (with url)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> FcmConfig:
        environ = os.environ if environ is None else environ
        creds = settings.fcm_credentials or environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        project = settings.fcm_project
        if not project and creds:
            project = str(_load_service_account(creds).get("project_id") or "")
        if not creds and not settings.fcm_url:
            raise PushNotConfigured(
                "FCM is not configured: set DELIVERY_FCM_CREDENTIALS (or "
                "GOOGLE_APPLICATION_CREDENTIALS) to a service-account JSON, or DELIVERY_FCM_URL "
                "to an FCM-compatible server")
        if not project:
            raise PushNotConfigured(
                "FCM project unknown: set DELIVERY_FCM_PROJECT (or use a service-account JSON "
                "with project_id)")
        return cls(project=project, url=settings.fcm_url.rstrip("/"), credentials=creds)

    @property
    def origin(self) -> str:
        return self.url or GOOGLE_FCM_ORIGIN

    @property
    def send_url(self) -> str:
        return f"{self.origin}/v1/projects/{self.project}/messages:send"


def _load_service_account(creds: str) -> dict[str, Any]:
    text = creds.strip()
    try:
        if text.startswith("{"):
            data = json.loads(text)
        else:
            with open(text, encoding="utf-8") as fh:
                data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise PushNotConfigured(f"cannot read FCM credentials {creds[:80]!r}: {exc}") from None
    if not isinstance(data, dict):
        raise PushNotConfigured("FCM credentials JSON is not an object")
    return data


# -- the sender -------------------------------------------------------------------------------


class FcmSender:
    """One named firebase-admin app, aimed at ``config.send_url``. Thread-safe."""

    def __init__(self, config: FcmConfig, credential: Any = None) -> None:
        self.config = config
        if credential is None:
            if config.credentials:
                credential = fb_credentials.Certificate(_load_service_account(config.credentials))
            elif config.url:
                credential = AnonymousCredentials()
            else:
                raise PushNotConfigured("no FCM credentials")
        if not isinstance(credential, GoogleCredentials | fb_credentials.Base):
            raise TypeError(f"not a credentials object: {type(credential).__name__}")
        key = hashlib.sha256(repr((config, id(credential))).encode()).hexdigest()[:12]
        self.app = firebase_admin.initialize_app(
            credential, {"projectId": config.project, "httpTimeout": config.timeout_s},
            name=f"delivery-push-{key}",
        )
        # Create the app's messaging service now and aim it (this instance only) at our origin.
        service = messaging._get_messaging_service(self.app)
        service._fcm_url = config.send_url
        # Retry only failed connects inside the SDK; status retries are the task's (see above).
        adapter = HTTPAdapter(
            pool_connections=16, pool_maxsize=100,
            max_retries=Retry(total=1, connect=1, read=0, status=0, other=0,
                              respect_retry_after_header=False, raise_on_status=False,
                              allowed_methods=None),
        )
        session: requests.Session = service._client.session
        session.mount(config.origin, adapter)
        self._service = service

    @property
    def send_url(self) -> str:
        return str(self._service._fcm_url)

    def send(self, items: Sequence[tuple[str, messaging.Message]]) -> list[SendResult]:
        """Send each (token, message) with ``messaging.send_each``; one result per item.

        A failure of the whole batch (e.g. the OAuth token endpoint is down, which
        firebase-admin reports as ``UnknownError``) counts as transient for every item.
        """
        results: list[SendResult] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start:start + MAX_BATCH]
            try:
                batch = messaging.send_each([m for _, m in chunk], app=self.app)
            except fb_exceptions.FirebaseError as exc:
                results += [SendResult(tok, "transient", exc.code or "UNKNOWN", str(exc)[:500])
                            for tok, _ in chunk]
                continue
            except ValueError as exc:  # a message firebase-admin refuses to encode
                results += [SendResult(tok, "failed", "INVALID_MESSAGE", str(exc)[:500])
                            for tok, _ in chunk]
                continue
            for (tok, _), resp in zip(chunk, batch.responses, strict=True):
                if resp.success:
                    results.append(SendResult(tok, "ok", "ok", str(resp.message_id)))
                else:
                    results.append(classify(tok, resp.exception))
        return results

    def close(self) -> None:
        firebase_admin.delete_app(self.app)


_senders: dict[FcmConfig, FcmSender] = {}
_senders_lock = threading.Lock()


def get_sender(settings: Settings) -> FcmSender:
    """The process's sender for these settings (created once; raises PushNotConfigured)."""
    config = FcmConfig.from_settings(settings)
    sender = _senders.get(config)
    if sender is None:
        with _senders_lock:
            sender = _senders.get(config)
            if sender is None:
                sender = _senders[config] = FcmSender(config)
    return sender


def reset_senders() -> None:
    """Delete the cached firebase apps (tests; a process that changes its settings)."""
    with _senders_lock:
        for sender in _senders.values():
            sender.close()
        _senders.clear()
