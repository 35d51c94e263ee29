import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from delivery.clock import later, utcnow
from delivery.settings import MAX_TTL_S
from delivery.store import Store
from delivery.validation import MAX_BODY_DEPTH, InvalidMessage, message_id_for, validate_send
from workers.devkit.procs import ROOT

OK = {"max_body_bytes": 100, "default_ttl_s": 60.0}


def test_valid_request_gets_a_stable_id_from_client_msg_id() -> None:
    a = validate_send("alice", "bob", {"t": "hi"}, "c1", **OK)
    b = validate_send("alice", "bob", {"t": "other"}, "c1", **OK)
    assert a.message_id == b.message_id == message_id_for("alice", "c1")
    assert validate_send("alice", "bob", "x", "c1", 5, **OK).ttl_s == 5.0
    assert validate_send("alice", "bob", "x", None, **OK).client_msg_id is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "bob", "x"), "sender"),
        (("   ", "bob", "x"), "sender"),
        ((3, "bob", "x"), "sender"),
        (("a" * 129, "bob", "x"), "sender"),
        (("alice", None, "x"), "recipient"),
        (("alice", "bob", {1, 2}), "body"),
        (("alice", "bob", float("nan")), "body"),
        (("alice", "bob", "x" * 200), "body"),
        (("alice", "bob", "x", ""), "client_msg_id"),
        (("alice", "bob", "x", None, -1), "ttl_s"),
        (("alice", "bob", "x", None, "10"), "ttl_s"),
        (("alice", "bob", "x", None, True), "ttl_s"),
    ],
)
def test_invalid_input_names_the_field(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        validate_send(*args, **OK)
    assert info.value.field == field
    assert field in str(info.value)


# -- finding 4: hostile send input is refused at once, never dropped later in the worker --------

@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "bob\n", "x\x1b[31m", "del\x7f", "c1\x85",
                                 "lone\ud800", "\udfff"])
@pytest.mark.parametrize("field", ["sender", "recipient", "client_msg_id"])
def test_control_characters_and_surrogates_in_ids_are_refused(field: str, bad: str) -> None:
    """Fault: a NUL in an id passed validation, returned an id, then failed in the worker."""
    args = {"sender": "alice", "recipient": "bob", "client_msg_id": "c1", field: bad}
    with pytest.raises(InvalidMessage) as info:
        validate_send(args["sender"], args["recipient"], "x", args["client_msg_id"], **OK)
    assert info.value.field == field and "control" in str(info.value)


def test_unicode_ids_are_fine() -> None:
    req = validate_send("zoë", "ü-\u00a0ser 😀", "x", "cmid-\u200b", **OK)
    assert req.recipient == "ü-\u00a0ser 😀"


@pytest.mark.parametrize("ttl", [1e308, float("inf"), float("-inf"), float("nan"), 0, -0.0,
                                 10**400, MAX_TTL_S * 1.0001])
def test_non_finite_or_out_of_range_ttl_is_refused(ttl: float) -> None:
    """Fault: a TTL of 1e308 passed validation and failed in the worker (datetime overflow)."""
    with pytest.raises(InvalidMessage) as info:
        validate_send("alice", "bob", "x", None, ttl, **OK)
    assert info.value.field == "ttl_s"


def test_ttl_range_bounds_are_accepted() -> None:
    assert validate_send("alice", "bob", "x", None, MAX_TTL_S, **OK).ttl_s == MAX_TTL_S
    assert validate_send("alice", "bob", "x", None, 1e-3, **OK).ttl_s == 1e-3


def nested(depth: int) -> object:
    body: object = "leaf"
    for i in range(depth):
        body = [body] if i % 2 else {"k": body}
    return body


BIG = {"max_body_bytes": 1 << 20, "default_ttl_s": 60.0}


@pytest.mark.parametrize("depth", [65, 1000, 8000, 100_000])
def test_bodies_nested_deeper_than_the_limit_are_refused(depth: int) -> None:
    """Fault: an 8,000-level body raised RecursionError instead of a clear error."""
    with pytest.raises(InvalidMessage, match="nested deeper than 64") as info:
        validate_send("alice", "bob", nested(depth), None, **BIG)
    assert info.value.field == "body"


def test_depth_limit_is_exact_and_configurable() -> None:
    assert validate_send("alice", "bob", nested(MAX_BODY_DEPTH), None, **BIG)
    with pytest.raises(InvalidMessage):
        validate_send("alice", "bob", nested(5), None, max_body_depth=4, **BIG)
    assert validate_send("alice", "bob", nested(4), None, max_body_depth=4, **BIG)
    # Brackets inside strings are text, not nesting.
    assert validate_send("alice", "bob", {"t": "[" * 500}, None, **BIG).body == {"t": "[" * 500}


def test_body_with_lone_surrogate_is_refused_and_keys_are_normalised() -> None:
    with pytest.raises(InvalidMessage, match="surrogate"):
        validate_send("alice", "bob", {"t": "\ud800"}, None, **OK)
    assert validate_send("alice", "bob", {1: (2, 3)}, None, **OK).body == {"1": [2, 3]}


def test_the_send_task_refuses_hostile_input_without_storing(sqlite_store: Store) -> None:
    """The task validates like the API (it is the entry point for ``send_task`` callers)."""
    from delivery.runtime import Runtime, set_runtime
    from delivery.settings import Settings
    from delivery.tasks import send

    set_runtime(Runtime(settings=Settings(), store=sqlite_store))
    try:
        for args in (("al\x00ice", "bob", "x"), ("alice", "bob", "x", None, 1e308),
                     ("alice", "bob", nested(8000))):
            with pytest.raises(InvalidMessage):
                send(*args)
    finally:
        set_runtime(None)
    with sqlite_store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar() == 0


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from delivery import migrate

    migrate.upgrade(f"sqlite:///{tmp_path / 'delivery.db'}")  # the embedded store, ready
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_DATA_DIR"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "workers.cli", "send", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "field"), [
    (("--json-body", "[" * 8000 + "]" * 8000), "nested deeper than 64"),
    (("--json-body", "[" * 65 + "]" * 65), "nested deeper than 64"),
    (("--ttl", "1e308", "hi"), "ttl_s"),
    (("--ttl", "inf", "hi"), "ttl_s"),
    (("--client-msg-id", "c\x01", "hi"), "client_msg_id"),
])
def test_cli_send_refuses_hostile_input_with_exit_2(tmp_path: Path, args: tuple[str, ...],
                                                    field: str) -> None:
    """Fault: ``delivery send --json-body`` died with a RecursionError traceback."""
    res = _cli(tmp_path, "--from", "alice", "--to", "bob", *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and field in res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == ""


# -- property: what validation accepts, the store stores and reads back equal -----------------

any_char = st.characters(exclude_categories=())  # surrogates and controls too
any_text = st.text(any_char, max_size=140)
json_body = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=12,
)
# At the top level, no floats or big integers: SQLite gives the JSON column NUMERIC affinity and
# converts a bare numeric text (see the xfail test below); inside arrays/objects all are drawn.
top_body = json_body.filter(lambda b: not isinstance(b, float)
                            and not (isinstance(b, int) and abs(b) >= 2**53))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sender=any_text, recipient=any_text, cmid=st.none() | any_text, body=top_body,
       ttl=st.none() | st.floats(allow_nan=True) | st.integers())
def test_anything_validation_accepts_is_stored_and_reads_back_equal(
    store: Store, sender: str, recipient: str, cmid: str | None, body: object,
    ttl: float | None,
) -> None:
    try:
        req = validate_send(sender, recipient, body, cmid, ttl, max_body_bytes=16 * 1024,
                            default_ttl_s=60.0)
    except InvalidMessage:
        return
    assert req.body == body  # string keys and lists: nothing to normalise
    now = utcnow()
    first, created = store.accept_request(req, now=now, deadline=later(60.0, now))
    got = store.get(first.id)
    assert got is not None
    if created:
        assert (got.sender, got.recipient, got.client_msg_id) == (sender, recipient, cmid)
        assert got.body == req.body and json.dumps(got.body) == json.dumps(req.body)
    else:  # an earlier example drew the same (sender, client_msg_id): stored once
        assert (got.sender, got.client_msg_id) == (sender, cmid)


@pytest.mark.xfail(strict=True, reason="SQLite: the JSON column has NUMERIC affinity, so a bare "
                   "numeric body is stored as a SQLite number (known bug, reported; store side)")
def test_sqlite_keeps_a_bare_numeric_body_exactly(sqlite_store: Store) -> None:
    # Comes back as the REAL 1.2345678901234568e+22 (also some floats: -7.81279336949368e+26).
    req = validate_send("alice", "bob", 12345678901234567890123, None, **OK)
    now = utcnow()
    msg, _ = sqlite_store.accept_request(req, now=now, deadline=later(60.0, now))
    got = sqlite_store.get(msg.id)
    assert got is not None and got.body == req.body


def test_the_api_refuses_before_enqueueing() -> None:
    """``send_message`` validates in the caller's process: an error, and no task enqueued."""
    from celery import Celery

    from delivery.api import send_message

    app = Celery("validation-test", broker="memory://", backend="cache+memory://")
    for kwargs in ({"sender": "al\x00ice", "recipient": "bob", "body": "x"},
                   {"sender": "alice", "recipient": "bob", "body": "x", "ttl_s": float("inf")},
                   {"sender": "alice", "recipient": "bob", "body": nested(8000)}):
        with pytest.raises(InvalidMessage):
            send_message(app=app, **kwargs)  # type: ignore[arg-type]
    with app.connection_for_write() as conn:
        assert conn.default_channel.queue_declare("celery", passive=False).message_count == 0


def test_a_direct_message_between_the_longest_non_ascii_ids_is_stored(store: Store) -> None:
    """Found by the property above on PostgreSQL: the direct conversation's id percent-encodes
    both user ids (12 characters per 4-byte character), past the column's old 800."""
    sender, recipient = "\U00010000" * 128, "\U00010001" * 128
    req = validate_send(sender, recipient, {"t": "hi"}, None, None, max_body_bytes=16 * 1024,
                        default_ttl_s=60.0)
    now = utcnow()
    first, created = store.accept_request(req, now=now, deadline=later(60.0, now))
    got = store.get(first.id)
    assert created and got is not None
    assert (got.sender, got.recipient, got.body) == (sender, recipient, {"t": "hi"})
