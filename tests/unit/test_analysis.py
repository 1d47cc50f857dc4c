"""A table's recommendations from its figures: advice only where the table is large enough,
and the evidence strong enough, for it to be worth acting on."""

from typing import Any

import pytest

from tickvault.monitoring.analysis import recommend

LOCK_WAITS = "look for lock waits or checkpoints"


def report(rows: int, *, count: int, p50: float, p99: float) -> dict[str, Any]:
    """A PostgreSQL market_data report: ``rows`` rows, ``count`` INSERTs of that latency."""
    return {
        "table": "market_data",
        "engine": "postgresql",
        "rows_estimate": rows,
        "seq_scan_share": 0.0,
        "indexes": {},
        "latencies": {"INSERT": {"count": count, "p50_ms": p50, "p99_ms": p99}},
    }


def test_the_demos_small_table_gets_no_lock_wait_advice() -> None:
    # `make run` on PostgreSQL after a minute: the first write of a new connection and a few
    # commits that waited for the disk make the p99 ten times the p50.
    demo = report(3_000, count=242, p50=1.72, p99=21.81)

    assert recommend(demo, slow_query_ms=100) == [
        "Nothing to change on market_data from the figures so far."
    ]


@pytest.mark.parametrize(
    ("rows", "count", "p99"),
    [
        (3_000, 5_000, 400.0),  # a small table: a full scan or a slow write is cheap noise
        (1_000_000, 200, 400.0),  # too few inserts for a p99 to say anything
        (1_000_000, 5_000, 21.8),  # uneven, but no insert is slow
    ],
)
def test_no_lock_wait_advice_without_enough_evidence(rows: int, count: int, p99: float) -> None:
    advice = recommend(report(rows, count=count, p50=1.0, p99=p99), slow_query_ms=100)

    assert not any(LOCK_WAITS in line for line in advice), advice


def test_a_large_table_with_slow_uneven_inserts_gets_the_advice() -> None:
    advice = recommend(report(1_000_000, count=5_000, p50=1.2, p99=250.0), slow_query_ms=100)

    assert advice == [
        "INSERT latency is uneven (p99 250.0 ms vs p50 1.2 ms over 5,000 inserts): look for "
        "lock waits or checkpoints, and batch single-row writes."
    ]


def test_the_slow_query_threshold_is_the_floor() -> None:
    figures = report(1_000_000, count=5_000, p50=1.0, p99=40.0)

    assert LOCK_WAITS in recommend(figures, slow_query_ms=25)[0]
    assert LOCK_WAITS not in recommend(figures, slow_query_ms=50)[0]
