"""The worker's batch limit, changeable at run time (``send_batch_limit`` remote control)."""

from __future__ import annotations

import pytest

from delivery.send_batching import BatchLimit


def test_the_configured_limit_holds_until_overridden() -> None:
    limit = BatchLimit()
    assert limit.effective(64) == 64
    limit.set(4)
    assert limit.effective(64) == 4


def test_none_goes_back_to_the_configured_limit() -> None:
    limit = BatchLimit()
    limit.set(4)
    limit.set(None)
    assert limit.effective(64) == 64


def test_a_limit_below_one_is_refused_and_changes_nothing() -> None:
    limit = BatchLimit()
    limit.set(8)
    with pytest.raises(ValueError, match=">= 1"):
        limit.set(0)
    assert limit.effective(64) == 8
