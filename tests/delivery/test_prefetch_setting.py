"""DELIVERY_WORKER_PREFETCH_MULTIPLIER: what a worker takes from the broker ahead (and so what a
frozen worker holds unacked, and the largest batch it can form) is a setting."""

from __future__ import annotations

import pytest

from delivery.celery_app import make_app
from delivery.settings import Settings, SettingsError


def test_the_workers_prefetch_multiplier_is_the_setting() -> None:
    assert make_app(Settings()).conf.worker_prefetch_multiplier == 4
    settings = Settings.from_env({"DELIVERY_WORKER_PREFETCH_MULTIPLIER": "1"})
    assert make_app(settings).conf.worker_prefetch_multiplier == 1


def test_a_prefetch_multiplier_under_one_is_refused() -> None:
    # 0 would mean "no limit" to Celery: a frozen worker could hold the whole queue.
    with pytest.raises(SettingsError, match="DELIVERY_WORKER_PREFETCH_MULTIPLIER"):
        Settings.from_env({"DELIVERY_WORKER_PREFETCH_MULTIPLIER": "0"})
