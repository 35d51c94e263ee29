"""The Celery application: ``celery -A workers.app worker`` / ``celery -A workers.app flower``.

The configuration and its reasons live in ``delivery.celery_app``; this module adds the worker's
bootsteps (presence replica, recovery sweep) and exposes ``app`` for the ``celery`` command.
"""

from __future__ import annotations

from delivery.celery_app import make_app

app = make_app()
