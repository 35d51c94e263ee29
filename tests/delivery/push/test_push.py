"""push_message over the real firebase-admin code path, aimed at the FCM stub, on both stores."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from delivery.clock import utcnow as _now
from delivery.models import State
from delivery.push.fcm import token_ref
from delivery.push.service import PushOutcome, TransientPushError, push_message
from delivery.push.stub import FcmStub
from delivery.runtime import Runtime, set_runtime
from delivery.store import Store
from delivery.store.devices import devices_of
from tests.delivery.push.conftest import dispatch, make_runtime, service_account_json
from tests.support.acks import ack


def _rows(store: Store, mid: str, attempt: int) -> list[tuple[str | None, str | None]]:
    return [(a.conn, a.result) for a in store.attempts_of(uuid.UUID(mid))
            if a.attempt == attempt and a.channel == "push"]


def test_success_pushes_every_device_with_data_payload(
    runtime: Runtime, stub: FcmStub, store: Store
) -> None:
    store.register_device("bob", "tok-a", "android", _now())
    store.register_device("bob", "tok-b", "ios", _now())
    body = {"text": "lunch at noon? " + "x" * 300}
    mid, attempt = dispatch(store, body=body)
    outcomes: list[tuple[str, str]] = []
    runtime.hooks.on_push = lambda m, o: outcomes.append((m, o))

    assert push_message(mid, attempt) == PushOutcome.PUSHED

    msg = store.get(uuid.UUID(mid))
    assert msg is not None
    assert msg.state == State.PUSHED and msg.pushed_at is not None and msg.ack_deadline is None
    assert outcomes == [(mid, "pushed")]
    sends = stub.requests
    assert sorted(r["token"] for r in sends) == ["tok-a", "tok-b"]
    assert all(r["path"] == "/v1/projects/p/messages:send" for r in sends)
    message = sends[0]["body"]["message"]
    data = message["data"]
    assert data["message_id"] == mid and data["sender"] == "alice"
    assert data["preview"].startswith("lunch at noon? xx") and len(data["preview"]) == 100
    assert message["notification"] == {"title": "alice", "body": data["preview"]}
    assert message["android"]["notification"]["tag"] == mid
    assert message["apns"]["headers"]["apns-collapse-id"] == mid
    rows = _rows(store, mid, attempt)
    assert (token_ref("tok-a"), "fcm:ok") in rows and (token_ref("tok-b"), "fcm:ok") in rows
    assert (None, "pushed") in rows  # routing's summary row, closed with the outcome
    details = {a.detail for a in store.attempts_of(uuid.UUID(mid)) if a.result == "fcm:ok"}
    assert all(d and d.startswith("projects/p/messages/") for d in details)


@pytest.mark.parametrize("code", ["UNREGISTERED", "SENDER_ID_MISMATCH", "INVALID_ARGUMENT"])
def test_invalid_token_is_disabled_not_retried_and_message_pending(
    runtime: Runtime, stub: FcmStub, store: Store, code: str
) -> None:
    store.register_device("bob", "dead", "android", _now())
    stub.fail_token("dead", code)
    mid, attempt = dispatch(store)

    assert push_message(mid, attempt) == PushOutcome.FAILED  # no TransientPushError: no retry

    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.PENDING
    assert msg.last_error == f"no active device (tokens rejected: {code})"
    assert devices_of(store, "bob", include_disabled=False) == []
    assert (token_ref("dead"), f"fcm:{code}") in _rows(store, mid, attempt)
    assert len(stub.requests) == 1
    (dev,) = devices_of(store, "bob")
    assert dev.disabled_reason == code and dev.disabled_at is not None


def test_invalid_token_among_good_ones_still_pushed(
    runtime: Runtime, stub: FcmStub, store: Store
) -> None:
    store.register_device("bob", "dead", "android", _now())
    store.register_device("bob", "live", "android", _now())
    stub.fail_token("dead", "UNREGISTERED")
    mid, attempt = dispatch(store)
    assert push_message(mid, attempt) == PushOutcome.PUSHED
    assert [d.token for d in devices_of(store, "bob", include_disabled=False)] == ["live"]


def test_transient_then_success_resends_only_to_failed_device(
    runtime: Runtime, stub: FcmStub, store: Store
) -> None:
    store.register_device("bob", "tok-a", "android", _now())
    store.register_device("bob", "tok-b", "android", _now())
    stub.fail_token("tok-b", "UNAVAILABLE", retry_after=1)
    mid, attempt = dispatch(store)

    with pytest.raises(TransientPushError) as info:
        push_message(mid, attempt)
    assert info.value.retry_after == 1.0 and info.value.codes == ["UNAVAILABLE"]
    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.DISPATCHED  # still routing's, deadline moved

    stub.fail_token("tok-b", None)
    assert push_message(mid, attempt) == PushOutcome.PUSHED
    assert len(stub.sends_to("tok-a")) == 1  # never re-sent to a device that accepted
    assert len(stub.sends_to("tok-b")) == 2
    results = [r for _, r in _rows(store, mid, attempt)]
    assert results.count("fcm:ok") == 2 and "fcm:UNAVAILABLE" in results


def test_transient_exhausted_becomes_pending(
    runtime: Runtime, stub: FcmStub, store: Store
) -> None:
    store.register_device("bob", "tok", "android", _now())
    stub.fail_token("tok", "QUOTA_EXCEEDED", retry_after=0)
    mid, attempt = dispatch(store)
    for _ in range(2):
        with pytest.raises(TransientPushError):
            push_message(mid, attempt)
    assert push_message(mid, attempt, final=True) == PushOutcome.FAILED
    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.PENDING
    assert msg.last_error == "push failed after retries: QUOTA_EXCEEDED"
    # a quota error is not the token's fault
    assert devices_of(store, "bob", include_disabled=False) != []
    assert len(stub.requests) == 3


def test_no_device_is_pending_with_reason(runtime: Runtime, stub: FcmStub, store: Store) -> None:
    mid, attempt = dispatch(store)
    assert push_message(mid, attempt) == PushOutcome.NO_DEVICE
    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.PENDING
    assert msg.last_error == "no active device" and msg.ack_deadline is None
    assert _rows(store, mid, attempt) == [(None, "no_device")]
    assert stub.requests == []


def test_acked_meanwhile_does_nothing(runtime: Runtime, stub: FcmStub, store: Store) -> None:
    store.register_device("bob", "tok", "android", _now())
    mid, attempt = dispatch(store)
    assert ack(store, uuid.UUID(mid), "bob", "conn-1", _now())
    assert push_message(mid, attempt) == PushOutcome.SKIPPED
    assert stub.requests == []
    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.DELIVERED


def test_stale_attempt_does_nothing(runtime: Runtime, stub: FcmStub, store: Store) -> None:
    store.register_device("bob", "tok", "android", _now())
    mid, attempt = dispatch(store)
    assert push_message(mid, attempt + 1) == PushOutcome.SKIPPED
    assert push_message(mid, attempt - 1) == PushOutcome.SKIPPED
    assert stub.requests == []


def test_duplicate_execution_pushes_once(runtime: Runtime, stub: FcmStub, store: Store) -> None:
    store.register_device("bob", "tok-a", "android", _now())
    store.register_device("bob", "tok-b", "web", _now())
    mid, attempt = dispatch(store)
    outcomes: list[str] = []
    runtime.hooks.on_push = lambda m, o: outcomes.append(o)
    assert push_message(mid, attempt) == PushOutcome.PUSHED
    assert push_message(mid, attempt) == PushOutcome.SKIPPED
    assert len(stub.sends_to("tok-a")) == 1 and len(stub.sends_to("tok-b")) == 1
    assert outcomes == ["pushed"]


def test_concurrent_duplicates_push_once(runtime: Runtime, stub: FcmStub, store: Store) -> None:
    """Two executions of the same (message, attempt) at once: the lease lets one send."""
    store.register_device("bob", "tok", "android", _now())
    mid, attempt = dispatch(store)
    stub.enqueue(None, delay_s=0.5)  # the first send is slow: the duplicate arrives meanwhile
    results: list[str] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        set_runtime(runtime)
        barrier.wait()
        results.append(push_message(mid, attempt))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results).count("pushed") == 1
    assert set(results) <= {"pushed", "busy", "skipped"}
    assert len(stub.sends_to("tok")) == 1


def test_service_account_with_local_token_uri_sends_bearer(
    store: Store, stub: FcmStub, tmp_path: Path
) -> None:
    sa = service_account_json(tmp_path / "sa.json", stub.token_uri)
    stub.set_require_auth(True)  # a send without a token the stub issued gets 401
    rt = make_runtime(store, fcm_url=stub.url, fcm_credentials=str(sa), fcm_project="")
    set_runtime(rt)
    try:
        store.register_device("bob", "tok", "android", _now())
        mid, attempt = dispatch(store)
        assert push_message(mid, attempt) == PushOutcome.PUSHED
    finally:
        set_runtime(None)
        from delivery.push.fcm import reset_senders

        reset_senders()
    (tok_req,) = stub.token_requests
    assert tok_req["form"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    (send,) = stub.requests
    assert send["authorization"] == f"Bearer {tok_req['token']}"
    assert send["project"] == "sa-project"  # from the JSON's project_id


def test_not_configured_leaves_message_pending(store: Store) -> None:
    rt = make_runtime(store, fcm_project="")
    set_runtime(rt)
    try:
        store.register_device("bob", "tok", "android", _now())
        mid, attempt = dispatch(store)
        assert push_message(mid, attempt) == PushOutcome.FAILED
    finally:
        set_runtime(None)
    msg = store.get(uuid.UUID(mid))
    assert msg is not None and msg.state == State.PENDING
    assert msg.last_error == "push failed: NOT_CONFIGURED"
