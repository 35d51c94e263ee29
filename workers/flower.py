"""``delivery flower [FLOWER OPTIONS]``: Flower, read-only, behind a real password.

Flower's API can run any task (``POST /api/task/async-apply/delivery.send`` stores a message
"from" anyone; ``delivery.register_device`` registers an attacker's push token) and control the
workers (shutdown, pool resize, revoke). Flower has no read-only option, so this launcher
removes, before Flower builds its web application, every route whose handler accepts a method
other than GET (all of Flower's task-execution and worker-control endpoints are POST); such a
request then gets Flower's own 404. Monitoring (the pages, ``GET /api/tasks``,
``/api/task/info/ID``, ``/api/workers``, ``/metrics``, ``/healthcheck``) is unchanged.

Startup is refused (exit 2) without basic auth (``--basic-auth`` or ``FLOWER_BASIC_AUTH``), or
when a password is shorter than :data:`MIN_PASSWORD` characters or still a placeholder (contains
``CHANGE-ME``, as every value in ``.env.example`` does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

MIN_PASSWORD = 12
PLACEHOLDER = "change-me"
WRITE_METHODS = ("post", "put", "patch", "delete")
# Handlers whose POST only reads: the task list's search (the Tasks page posts its queries) and
# the catch-all 404.
READ_ONLY_POST = frozenset({"TasksDataTable", "NotFoundErrorHandler"})


def check_basic_auth(value: str | None) -> str | None:
    """Why ``value`` (``user:pw[,user2:pw2]``) must not protect Flower; None when it may."""
    if not value or not value.strip():
        return "basic auth is required: set FLOWER_BASIC_AUTH=user:password (or --basic-auth)"
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user.strip():
            return "basic auth must be user:password[,user2:password2]"
        if PLACEHOLDER in password.lower():
            return f"the password of {user!r} is the placeholder from .env.example: change it"
        if len(password) < MIN_PASSWORD:
            return f"the password of {user!r} is shorter than {MIN_PASSWORD} characters"
    return None


def _handler_class(route: Any) -> Any:
    return getattr(route, "handler_class", None) or route[1]


def read_only_routes(routes: Sequence[Any]) -> list[Any]:
    """The routes whose handler only reads: it overrides no write method (``post`` ...), or its
    POST is a known query. A new write endpoint in a later Flower is dropped by default."""
    from tornado.web import RequestHandler

    def writes(cls: Any) -> bool:
        if cls.__name__ in READ_ONLY_POST:
            return False
        return any(getattr(cls, m, None) is not getattr(RequestHandler, m) for m in WRITE_METHODS)

    return [r for r in routes if not writes(_handler_class(r))]


def basic_auth_from(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> str | None:
    for i, arg in enumerate(argv):
        for flag in ("--basic-auth", "--basic_auth"):
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
    return environ.get("FLOWER_BASIC_AUTH")


def main(argv: list[str]) -> int:
    problem = check_basic_auth(basic_auth_from(argv, os.environ))
    if problem is not None:
        print(f"delivery flower: {problem}", file=sys.stderr)
        return 2
    import flower.app

    flower.app.default_handlers = read_only_routes(flower.app.default_handlers)
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "workers.app", "flower", *argv]
    try:
        celery_main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
