"""The server processes' thread switch interval (delivery/gil.py, DELIVERY_GIL_SWITCH_MS)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from delivery.gil import apply_switch_interval
from delivery.settings import Settings, SettingsError


@pytest.fixture
def restore_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_a_positive_interval_in_ms_is_applied(restore_interval: None) -> None:
    apply_switch_interval(0.5)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_zero_keeps_pythons_interval(restore_interval: None) -> None:
    before = sys.getswitchinterval()
    apply_switch_interval(0)
    assert sys.getswitchinterval() == before


def test_the_default_setting_is_half_a_millisecond() -> None:
    assert Settings().gil_switch_ms == 0.5


def test_a_negative_setting_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="DELIVERY_GIL_SWITCH_MS"):
        Settings.from_env({"DELIVERY_GIL_SWITCH_MS": "-1"}).validate()

