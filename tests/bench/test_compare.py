"""The comparison script's bookkeeping: which numbers it lines up between the two commits, and the ratio."""

from __future__ import annotations

import pytest

from tests.bench.compare import flatten, summarise


def test_flatten_keys_rows_by_their_name_not_their_position() -> None:
    document = {
        "levels": [{"clients": 1, "throughput": 40.5, "ok": True}, {"clients": 16, "throughput": 58.0}],
        "vectors": 1000,
        "label": "text is not a figure",
        "nested": {"p50_ms": 4.4},
    }
    assert flatten(document) == {
        "levels[clients=1].throughput": 40.5,
        "levels[clients=1].clients": 1.0,
        "levels[clients=16].throughput": 58.0,
        "levels[clients=16].clients": 16.0,
        "vectors": 1000.0,
        "nested.p50_ms": 4.4,
    }


def test_summary_takes_each_sides_median_and_only_shared_metrics() -> None:
    runs = {
        "base": [{"rps": 10.0, "old_only": 1.0}, {"rps": 30.0}, {"rps": 20.0}],
        "head": [{"rps": 45.0}, {"rps": 40.0}, {"rps": 90.0}],
    }
    (row,) = summarise(runs)
    assert row["metric"] == "rps" and row["base"] == 20.0 and row["head"] == 45.0
    assert row["head_over_base"] == pytest.approx(2.25)
