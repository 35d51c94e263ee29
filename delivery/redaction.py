"""Message bodies never leave the store and the wire: scrubbing of error text.

A database error's text carries the statement's bound parameters (``[parameters: ...]``, the
body included) and PostgreSQL's own ``DETAIL``/``CONTEXT`` lines echo row values and JSON
fragments. Celery stores a failed task's exception and traceback in the result backend
(``celery-task-meta-*``), sends them to Flower in ``task-failed``/``task-retried`` events and
logs them. :class:`RedactingTask` (every task's base class, installed by :func:`install`)
replaces such an exception *before* Celery sees it, so all three get the scrubbed text; the
logging filter in :mod:`delivery.logs` applies the same :func:`scrub_text` to log lines.

The decision part (:func:`scrub_text`, :func:`scrub_exception`) is pure; only :func:`install`
touches the Celery app.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, cast

from celery import Celery, Task
from celery.exceptions import Retry

from delivery.task_names import SEND_GROUP_TASK, SEND_TASK

HIDDEN = "<hidden>"

# SQLAlchemy's error text: "[parameters: {...}]" is one line (values are repr'd).
_PARAMS = re.compile(r"\[parameters: [^\n]*")
# PostgreSQL's extra lines echo row and JSON values ("Key (id)=(...)", "Failing row contains
# (...)", 'Token "..." is invalid', "JSON data, line 1: ..."); keep the label, drop the text.
_PG_LINES = re.compile(r"^(\s*(?:DETAIL|CONTEXT|HINT|WHERE)):[^\n]*", re.MULTILINE)
_ECHOES = re.compile(
    r"(Failing row contains|JSON data, line \d+:|Key \([^)\n]*\)=)[^\n]*"
)
# 'invalid input syntax for type json: "..."' and friends quote the bad value itself.
_QUOTED_VALUE = re.compile(r"(for type [\w ]+|value): (\"[^\n]*|'[^\n]*)")

# Below this length a string leaf of a body is not worth hunting for (it would match words).
MIN_LEAF = 8


def scrub_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without bound parameters, echoed row values, or any of the ``known`` strings."""
    out = _PARAMS.sub(f"[parameters: {HIDDEN}]", text)
    out = _PG_LINES.sub(lambda m: f"{m.group(1)}: {HIDDEN}", out)
    out = _ECHOES.sub(lambda m: f"{m.group(1)} {HIDDEN}", out)
    out = _QUOTED_VALUE.sub(lambda m: f"{m.group(1)}: {HIDDEN}", out)
    for s in sorted(set(known), key=len, reverse=True):
        if s and s in out:
            out = out.replace(s, HIDDEN)
    return out


def body_strings(body: Any) -> list[str]:
    """The strings a body could show up as in an error: its JSON forms and long string leaves."""
    out: list[str] = []
    try:
        out += [json.dumps(body), json.dumps(body, separators=(",", ":")), repr(body)]
    except (TypeError, ValueError):
        out.append(repr(body))
    out += [s for s in _leaves(body) if len(s) >= MIN_LEAF]
    # repr() escapes quotes and non-ASCII differently from json: cover both forms of leaves.
    out += [json.dumps(s)[1:-1] for s in list(out) if len(s) >= MIN_LEAF]
    return [s for s in out if len(s) >= MIN_LEAF]


def _leaves(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(v.values())  # keys are field names: hiding them would garble errors
        elif isinstance(v, list | tuple):
            stack.extend(v)


class RedactedError(Exception):
    """Stands in for an exception whose text had to be scrubbed; names the original type."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_db_error(exc: BaseException) -> bool:
    mod = type(exc).__module__
    return mod.startswith(("sqlalchemy", "psycopg", "sqlite3"))


def _db_summary(exc: BaseException) -> str:
    """Class, driver class, SQLSTATE and the first line of the driver's message (scrubbed)."""
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    first = (str(inner).strip().splitlines() or [""])[0]
    parts = [f"{type(exc).__module__}.{type(exc).__qualname__}"]
    if inner is not exc:
        parts.append(f"({type(inner).__module__}.{type(inner).__qualname__})")
    code = getattr(inner, "sqlstate", None) or getattr(inner, "pgcode", None)
    if code:
        parts.append(f"sqlstate={code}")
    return " ".join(parts) + f": {scrub_text(first)} [statement and parameters {HIDDEN}]"


def scrub_exception(exc: BaseException, known: Iterable[str] = ()) -> BaseException:
    """``exc`` itself when no text in its chain needs scrubbing, else a clean stand-in.

    The stand-in keeps the exception type where it can be rebuilt from a message (so
    ``throws=`` and callers' ``except`` clauses still match); database errors become a
    :class:`RedactedError` naming the original class and SQLSTATE. Raise it ``from None``: the
    original chain (with its text) must not be printed under it.
    """
    known = list(known)
    if isinstance(exc, Retry):
        return _scrub_retry(exc, known)
    dirty = [e for e in _chain(exc) if _is_db_error(e) or scrub_text(str(e), known) != str(e)]
    if not dirty:
        return exc
    if _is_db_error(exc):
        return RedactedError(_db_summary(exc))
    db = next((e for e in _chain(exc) if _is_db_error(e)), None)
    text = scrub_text(str(exc), known)
    if db is not None:
        text += f" (caused by {_db_summary(db)})"
    try:
        clean = type(exc)(text)
        if str(clean) == text:
            return clean
    except Exception:
        pass
    return RedactedError(f"{type(exc).__module__}.{type(exc).__qualname__}: {text}")


def _scrub_retry(r: Retry, known: list[str]) -> BaseException:
    exc = r.exc if isinstance(r.exc, BaseException) else None
    clean_exc = scrub_exception(exc, known) if exc is not None else None
    message = scrub_text(r.message, known) if r.message else r.message
    excs = getattr(r, "excs", None)
    if clean_exc is exc and message == r.message and (
            not excs or scrub_text(excs, known) == excs):
        return cast(BaseException, r)  # celery is untyped
    new = Retry(message, clean_exc if clean_exc is not None else None, r.when,
                is_eager=r.is_eager, sig=r.sig)
    if clean_exc is None and excs:
        new.excs = scrub_text(excs, known)
    return cast(BaseException, new)


class RedactingTask(Task):
    """Base of every task: an exception leaving the task body is scrubbed first."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            known = body_strings(kwargs["body"]) if "body" in kwargs else []
            clean = scrub_exception(exc, known)
            if clean is exc:
                raise
            raise clean from None


# Tasks that take a body, and its position when it is passed positionally.
BODY_ARG = {SEND_TASK: 2, SEND_GROUP_TASK: 2}


def _positional_redaction(base: type) -> type:
    """``base`` (the app's AMQP class) also redacting a body passed as a positional argument:
    ``argsrepr`` is what the task headers, the task-sent event and Flower show."""

    class PositionalRedactingAMQP(base):
        def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                       *rest: Any, **opts: Any) -> Any:
            pos = BODY_ARG.get(name)
            if (pos is not None and opts.get("argsrepr") is None
                    and isinstance(args, list | tuple) and len(args) > pos):
                opts["argsrepr"] = repr([("<redacted>" if i == pos else a)
                                         for i, a in enumerate(args)])
            return super().as_task_v2(task_id, name, args, kwargs, *rest, **opts)

    return PositionalRedactingAMQP


def install(app: Celery) -> None:
    """Make :class:`RedactingTask` the base of the app's tasks and redact positional bodies in
    task messages (before any task is bound or message built)."""
    if "Task" in app.__dict__ or "amqp" in app.__dict__:
        raise RuntimeError("install(app) must run before the app's tasks are created")
    from celery.utils.imports import symbol_by_name

    app.task_cls = RedactingTask
    app.amqp_cls = _positional_redaction(symbol_by_name(app.amqp_cls))
