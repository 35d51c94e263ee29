"""Scrubbing of error text: no bound parameters, echoed row values or body strings survive, in
exceptions (what Celery stores and Flower shows) and in log lines."""

from __future__ import annotations

import io
import logging

import pytest
from celery.exceptions import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from delivery.logs import KeyValueFormatter, RedactingFilter
from delivery.redaction import RedactedError, body_strings, scrub_exception, scrub_text
from delivery.validation import InvalidMessage

MARKER = "MARKER-7f3a-body"

# What SQLAlchemy over psycopg printed for a JSON value PostgreSQL refused (captured verbatim).
PG_JSON_ERROR = (
    "(psycopg.errors.InvalidTextRepresentation) invalid input syntax for type json\n"
    f'DETAIL:  Token ""{MARKER}" is invalid.\n'
    f'CONTEXT:  JSON data, line 1: {{"text": "{MARKER}\n'
    "unnamed portal parameter $1 = '...'\n"
    "[SQL: INSERT INTO messages (id, body) VALUES (%(id)s, %(body)s)]\n"
    f"[parameters: {{'id': 'x', 'body': '{{\"text\": \"{MARKER}\"}}'}}]\n"
    "(Background on this error at: https://sqlalche.me/e/21/9h9h)"
)


def test_scrub_text_removes_parameters_and_echoed_values() -> None:
    out = scrub_text(PG_JSON_ERROR)
    assert MARKER not in out
    assert "invalid input syntax for type json" in out  # the cause stays readable
    assert "[SQL: INSERT INTO messages" in out
    assert "[parameters: <hidden>]" in out


@pytest.mark.parametrize("line", [
    f"DETAIL:  Failing row contains (1, {MARKER}).",
    f'invalid input syntax for type uuid: "{MARKER}"',
    f"DETAIL:  Key (sender, client_msg_id)=(a, {MARKER}) already exists.",
])
def test_scrub_text_removes_each_postgres_echo(line: str) -> None:
    assert MARKER not in scrub_text(line)


def test_scrub_text_removes_known_body_strings() -> None:
    body = {"text": f"hello {MARKER}", "n": 1}
    assert MARKER not in scrub_text(f"ValueError: bad {body!r}", body_strings(body))
    assert scrub_text("nothing to see", body_strings(body)) == "nothing to see"


def _sqlite_error() -> DBAPIError:
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT * FROM missing WHERE x = :x"), {"x": MARKER})
    except DBAPIError as exc:
        return exc
    raise AssertionError("no error")


def test_a_database_error_becomes_a_redacted_error_naming_its_class() -> None:
    exc = _sqlite_error()
    assert MARKER in str(exc)  # the fault: SQLAlchemy prints the bound parameters
    clean = scrub_exception(exc)
    assert isinstance(clean, RedactedError)
    assert MARKER not in str(clean)
    assert "sqlalchemy.exc.OperationalError" in str(clean) and "no such table" in str(clean)


def test_a_clean_exception_is_kept_and_a_chained_database_error_is_cut() -> None:
    plain = InvalidMessage("body", "is 99999 bytes, more than the limit of 16384")
    assert scrub_exception(plain) is plain
    try:
        try:
            raise _sqlite_error()
        except DBAPIError as db:
            raise RuntimeError("storing failed") from db
    except RuntimeError as outer:
        clean = scrub_exception(outer)
    assert type(clean) is RuntimeError and MARKER not in str(clean)
    assert "storing failed" in str(clean) and "caused by sqlalchemy" in str(clean)


def test_a_retry_carrying_a_database_error_is_rebuilt_without_it() -> None:
    retry = Retry(exc=_sqlite_error(), when=1.0)
    assert MARKER in str(retry.exc)  # what the traceback and the backend would show
    clean = scrub_exception(retry)
    assert isinstance(clean, Retry) and clean.when == 1.0
    assert MARKER not in str(clean) and MARKER not in str(clean.exc)
    assert isinstance(clean.exc, RedactedError)


def test_the_logging_filter_scrubs_message_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("delivery.test-redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("store said %s", PG_JSON_ERROR)
        try:
            raise _sqlite_error()
        except DBAPIError:
            log.exception("routing failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "routing failed" in out and "no such table" in out
    assert MARKER not in out


@pytest.mark.parametrize("task", ["delivery.send", "delivery.send_group"])
def test_a_body_passed_positionally_is_redacted_in_the_task_message(task: str) -> None:
    # The fault: only keyword bodies were redacted; send_task(args=[...]) showed the body in
    # the headers' argsrepr, the task-sent event and Flower.
    from delivery.celery_app import make_app

    app = make_app()
    try:
        m = app.amqp.as_task_v2("t1", task, args=["a", "b", {"text": MARKER}],
                                kwargs={})
        assert MARKER not in m.headers["argsrepr"] and "<redacted>" in m.headers["argsrepr"]
        assert MARKER not in str(m.sent_event)
        kw = app.amqp.as_task_v2("t2", task, args=[],
                                 kwargs={"sender": "a", "recipient": "b", "body": MARKER})
        assert MARKER not in kw.headers["kwargsrepr"]
    finally:
        app.close()


def test_every_engine_is_built_by_delivery_db() -> None:
    # delivery.db.make_engine is where engine-wide settings (hide_parameters, timeouts) live:
    # an engine created anywhere else would bypass them.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(p.relative_to(root)) for d in ("delivery", "presence", "workers", "migrations")
        for p in (root / d).rglob("*.py")
        if p.name != "db.py" and ("create_engine(" in p.read_text()
                                  or "engine_from_config(" in p.read_text())
    ]
    assert offenders == []


def test_every_task_of_the_app_scrubs_its_failures() -> None:
    """The fault: the batched send task took plain ``celery.Task`` as its base, so a failing
    statement's echoed row (the body) reached the result backend and Flower."""
    from delivery.celery_app import make_app
    from delivery.redaction import RedactingTask

    app = make_app()
    try:
        app.loader.import_default_modules()  # the task modules (``include``)
        ours = {n: t for n, t in app.tasks.items() if n.startswith("delivery.")}
        assert ours and all(isinstance(t, RedactingTask) for t in ours.values()), [
            n for n, t in ours.items() if not isinstance(t, RedactingTask)]
    finally:
        app.close()


def test_the_logging_filter_scrubs_celerys_trace_data() -> None:
    """Celery's trace log passes the failure's repr in ``extra={'data': ...}``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("delivery.test-redaction-data")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("task failed", extra={"data": {"exc": PG_JSON_ERROR, "id": "t1"}})
    finally:
        log.removeHandler(handler)
    assert MARKER not in stream.getvalue()
