"""The Celery application: ``celery -A workers.app worker`` / ``celery -A workers.app flower``.

The configuration and its reasons live in ``delivery.celery_app``; this module adds the worker
bootstep (presence replica, router, recovery sweep) and exposes ``app`` for ``celery``.
"""

from __future__ import annotations

import sys

from delivery.celery_app import make_app
from delivery.settings import SettingsError
from workers import control  # noqa: F401  (registers remote-control commands)
from workers.bootsteps import PresenceStep

try:
    app = make_app()
except SettingsError as exc:  # one line naming the variable, not Celery's loader traceback
    print(f"delivery: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
app.steps["worker"].add(PresenceStep)
