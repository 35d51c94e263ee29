"""Fixtures of the push tests: the FCM stub, a runtime aimed at it, dispatched messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery.clock import later, utcnow
from delivery.models import State
from delivery.push.fcm import reset_senders
from delivery.push.stub import FcmStub
from delivery.runtime import Runtime, set_runtime
from delivery.settings import Settings
from delivery.store import Store


@pytest.fixture
def stub() -> Iterator[FcmStub]:
    s = FcmStub().start()
    yield s
    s.stop()


def make_runtime(store: Store, **settings: object) -> Runtime:
    values: dict[str, object] = {"fcm_project": "p", "ack_timeout_s": 2.0}
    values.update(settings)
    return Runtime(settings=Settings(**values), store=store)  # type: ignore[arg-type]


@pytest.fixture
def runtime(store: Store, stub: FcmStub) -> Iterator[Runtime]:
    """The process runtime on ``store`` (SQLite and PostgreSQL), FCM aimed at the stub."""
    rt = make_runtime(store, fcm_url=stub.url)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    reset_senders()


Dispatch = Callable[..., tuple[str, int]]


def dispatch(store: Store, recipient: str = "bob", body: object = "hello bob",
             sender: str = "alice") -> tuple[str, int]:
    """Store a message and claim a push attempt the way routing does; (id, attempt)."""
    now = utcnow()
    msg, _ = store.accept(
        message_id=uuid.uuid4(), sender=sender, recipient=recipient, body=body,
        client_msg_id=None, now=now, ttl_s=3600, deadline=later(2.0, now),
    )
    attempt = store.start_attempt(
        msg, channel="push", targets=[], now=now, deadline=later(2.0, now),
        to_state=State.DISPATCHED,
    )
    assert attempt is not None
    return str(msg.id), attempt


def service_account_json(path: Path, token_uri: str, project: str = "sa-project") -> Path:
    """A locally generated service-account key whose token_uri points at the stub."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "stub-key-1",
        "private_key": pem,
        "client_email": f"push@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "auth_uri": "http://127.0.0.1/auth",
        "token_uri": token_uri,
    }))
    return path
