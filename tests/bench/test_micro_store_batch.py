"""``bench.micro.store_batch``: it runs on a scratch database, reports every batch size, and a
send batch is the four statements its docs promise whatever its size."""

from __future__ import annotations

import json

import pytest

from bench.micro import store_batch


def test_a_tiny_run_reports_four_statements_per_batch_at_every_size(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert store_batch.main(["--batches", "3", "--rounds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {str(s) for s in store_batch.SIZES}
    for row in result.values():
        assert row["statements_per_batch"] == 4.0
        assert row["wall_ms_p50"] > 0 and row["cpu_ms_per_message"] > 0
