"""Structured logs: one line per event, ``key=value`` (or JSON), with ``message_id`` on every
line about a message.

    log = message_log(logging.getLogger("delivery.routing"), msg.id)
    log.info("push", extra={"attempt": 2})
    # ts=2024-05-01T12:00:00.123Z level=info logger=delivery.routing event=push
    #   message_id=1b6e... attempt=2

Lines that predate this module (``log.info("message %s: push ...", msg.id)``) get their
``message_id`` field from the text, so existing call sites need no change.

Our loggers (``delivery``, ``presence``, ``workers``) get this format in every process; in a
worker Celery's own lines (``celery.*``, the root logger) get it too, so a log shipper sees one
format. ``DELIVERY_LOG_FORMAT``: ``kv`` (default) or ``json``; ``DELIVERY_LOG_LEVEL``: a
standard level name. A bad value of either stops start-up with a line naming the variable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

OUR_LOGGERS = ("delivery", "presence", "workers")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_MSG_ID = re.compile(
    r"\bmessage[ =:]+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
)
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    text = record.getMessage()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    out: dict[str, Any] = {
        "ts": f"{ts}.{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": text,
    }
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    if "message_id" not in extra:
        found = _MSG_ID.search(text)
        if found:
            extra["message_id"] = found.group(1)
    out.update({k: (str(v) if not isinstance(v, int | float | bool | None) else v)
                for k, v in extra.items()})
    if record.exc_text:  # set (scrubbed) by RedactingFilter
        out["exc"] = record.exc_text
    elif record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


def _kv_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event="..." key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_kv_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


class MessageLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line carries ``message_id`` (and any other fixed fields)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def message_log(logger: logging.Logger, message_id: Any, **fields: Any) -> MessageLog:
    return MessageLog(logger, {"message_id": str(message_id), **fields})


class RedactingFilter(logging.Filter):
    """Scrubs a record before any handler formats it: bound parameters and PostgreSQL's echoed
    values (see :mod:`delivery.redaction`) leave the message, its arguments and the traceback.

    Attached to handlers (it then sees records propagated from any logger, Celery's included).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from delivery.redaction import scrub_text

        try:
            text = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        clean = scrub_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        data = getattr(record, "data", None)  # Celery's trace passes the failure's repr here
        if isinstance(data, dict):
            record.data = {k: scrub_text(v) if isinstance(v, str) else v
                           for k, v in data.items()}
        return True


_FILTER = RedactingFilter("delivery-redaction")


def redact_handlers(*loggers: logging.Logger) -> None:
    """Add the redacting filter to every handler of ``loggers`` (default: the root logger and
    ours). Idempotent; call it after whatever configured the handlers."""
    for logger in loggers or [logging.getLogger(), *map(logging.getLogger, OUR_LOGGERS)]:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
FORMATS = ("kv", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configured_format(environ: Mapping[str, str] | None = None) -> str:
    """``DELIVERY_LOG_FORMAT`` checked (SettingsError names the variable)."""
    from delivery.settings import SettingsError

    raw = (os.environ if environ is None else environ).get("DELIVERY_LOG_FORMAT") or "kv"
    if raw.lower() not in FORMATS:
        raise SettingsError(f"DELIVERY_LOG_FORMAT must be one of {', '.join(FORMATS)}, "
                            f"got {raw!r}")
    return raw.lower()


def check_level(raw: str, var: str = "DELIVERY_LOG_LEVEL") -> str:
    """A level name checked and upper-cased (SettingsError names ``var``)."""
    from delivery.settings import SettingsError

    if raw.upper() not in LEVELS:
        raise SettingsError(f"{var} must be one of {', '.join(LEVELS)}, got {raw!r}")
    return raw.upper()


def configured_level(environ: Mapping[str, str] | None = None) -> str:
    """``DELIVERY_LOG_LEVEL`` checked (default INFO)."""
    raw = (os.environ if environ is None else environ).get("DELIVERY_LOG_LEVEL") or "INFO"
    return check_level(raw)


def make_formatter(fmt: str | None = None) -> logging.Formatter:
    fmt = (fmt or os.environ.get("DELIVERY_LOG_FORMAT") or "kv").lower()
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def setup_server_process(cli_level: str | None) -> None:
    """A server command's logging (``delivery gateway``, ``delivery api``): the level from
    ``--log-level`` or ``DELIVERY_LOG_LEVEL``, the format checked, one structured format for
    every logger, bodies and parameters scrubbed (SettingsError names a bad value)."""
    level = (check_level(cli_level, "--log-level") if cli_level else configured_level())
    configured_format()
    setup_process(level)
    redact_handlers()


def setup_process(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """A process that is not a Celery worker (the gateway): our loggers and everyone else's
    (the root logger: websockets, asyncio, libraries) in the one configured format."""
    handler = setup(level, stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "delivery-structured"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def setup(level: int | str = logging.INFO, stream: TextIO | None = None,
          fmt: str | None = None) -> logging.Handler:
    """Send our loggers' records, one structured line each, to ``stream`` (stderr).

    They stop propagating to the root logger, so a process whose root logger has Celery's (or
    anyone's) handler prints each event once. Calling it again replaces the handler.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.set_name("delivery-structured")
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "delivery-structured"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    redact_handlers()
    return handler


def install_celery_logging() -> None:
    """Switch our loggers to structured lines once Celery has set up its own logging."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    def _after_setup(logger: logging.Logger | None = None, loglevel: Any = None,
                     **_: Any) -> None:
        stream = None
        for h in (logger.handlers if logger is not None else []):
            if isinstance(h, logging.StreamHandler):
                stream = h.stream
                break
        setup(loglevel or logging.INFO, stream=stream)
        # Celery's own handlers (root and task loggers) print in the same format.
        formatter = make_formatter()
        for target in (logger, logging.getLogger("celery.task")):
            for h in (target.handlers if target is not None else []):
                h.setFormatter(formatter)

    def _after_task_setup(logger: logging.Logger | None = None, **_: Any) -> None:
        for h in (logger.handlers if logger is not None else []):
            h.setFormatter(make_formatter())

    after_setup_logger.connect(_after_setup, weak=False)
    # Celery's task logger has handlers of its own (the "Task ... raised" lines).
    after_setup_task_logger.connect(_after_task_setup, weak=False)
    after_setup_task_logger.connect(_redact_task_logger, weak=False)


def _redact_task_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    redact_handlers(*([logger] if logger is not None else []))
