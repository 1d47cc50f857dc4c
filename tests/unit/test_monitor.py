"""The performance monitor without a database: the original API, percentiles, the
background loop and the Prometheus output."""

import asyncio
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tickvault.monitoring.histogram import LatencyHistogram
from tickvault.monitoring.index_usage import (
    IndexUsageTracker,
    PgIndexStats,
    PgTableStats,
    classify_plan,
)
from tickvault.monitoring.prometheus import render
from tickvault.monitoring.statements import StatementInfo, classify
from tickvault.monitoring.window import TrailingWindow
from tickvault.services.database_performance import (
    DatabasePerformanceMonitor,
    PerformanceMetrics,
    QueryPerformance,
    get_performance_monitor,
)


async def test_the_original_example_works_without_an_engine() -> None:
    monitor = DatabasePerformanceMonitor()
    tracked = monitor.track_query(
        query_type="INSERT", table_name="market_data", execution_time_ms=0.5, used_index=False
    )
    assert tracked == QueryPerformance("INSERT", "market_data", 0.5, False, 1, tracked.timestamp)
    monitor.track_query("INSERT", "market_data", 1.5, rows=9)
    monitor.track_query("select", "alert_logs", 4.0, used_index=True)

    metrics = await monitor.collect_metrics()

    assert isinstance(metrics, PerformanceMetrics)
    assert metrics.total_queries == 3
    assert metrics.total_rows_inserted == 10
    assert metrics.query_avg_time_ms == pytest.approx(2.0)
    assert metrics.insert_rate == pytest.approx(10 / metrics.window_seconds, rel=0.01)
    assert metrics.query_rate == pytest.approx(3 / metrics.window_seconds, rel=0.01)
    assert metrics.by_table["market_data"]["INSERT"]["count"] == 2
    assert metrics.by_table["alert_logs"]["SELECT"]["index_used"] == 1
    assert metrics.by_table["market_data"]["INSERT"]["full_scans"] == 1
    assert metrics.index_usage == {}
    assert metrics.connection_pool == {}
    decoded = json.loads(json.dumps(metrics.to_dict()))
    assert decoded["total_queries"] == 3
    assert decoded["timestamp"].endswith("Z")  # UTC, written as the API writes times


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_window_trails_and_reading_resets_nothing() -> None:
    clock = FakeClock()
    monitor = DatabasePerformanceMonitor(window_seconds=10, clock=clock)
    clock.now += 1
    for ms in (1.0, 2.0, 3.0):
        monitor.track_query("SELECT", "market_data", ms)
    clock.now += 1
    first = await monitor.collect_metrics()
    again = await monitor.collect_metrics()
    clock.now += 3
    monitor.track_query("SELECT", "market_data", 10.0)
    clock.now += 7  # 12 s in: the first three are out of the window, the fourth in
    second = await monitor.collect_metrics()
    clock.now += 4  # 16 s in: nothing in the window
    third = await monitor.collect_metrics()

    assert (first.window_seconds, first.query_max_time_ms, first.query_avg_time_ms) == (
        2.0,
        3.0,
        2.0,
    )
    assert first.query_rate == 1.5
    assert (again.window_seconds, again.query_rate, again.by_table) == (
        2.0,
        1.5,
        first.by_table,
    )
    assert second.window_seconds == 10.0
    assert second.by_table["market_data"]["SELECT"]["count"] == 1
    assert (second.query_max_time_ms, second.query_rate) == (10.0, 0.1)
    assert (second.total_queries, third.total_queries) == (4, 4)
    assert (third.window_seconds, third.query_rate, third.by_table) == (10.0, 0.0, {})
    assert list(monitor.history) == []  # only the background loop keeps its collections


async def test_two_readers_polling_alternately_both_see_the_steady_rate() -> None:
    # 500 rows a second, written as they are in life: 50-row batches every 0.1 s. With a
    # window reset by each reader, the two saw 0 or 1,666 rows/s; over a trailing window
    # both see 500 whatever their pace.
    clock = FakeClock()
    monitor = DatabasePerformanceMonitor(window_seconds=10, clock=clock)
    seen: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for step in range(300):  # 30 s
        clock.now += 0.1
        monitor.track_query("INSERT", "market_data", 0.5, rows=50)
        if step >= 110 and step % 2 == 0:
            for reader, offset in (("a", 0.013), ("b", 0.047)):
                clock.now += offset
                metrics = await monitor.collect_metrics()
                seen[reader].append((metrics.insert_rate, metrics.window_seconds))
                clock.now -= offset

    for reader in ("a", "b"):
        assert len(seen[reader]) == 95
        for rate, window in seen[reader]:
            assert 10 <= window < 11
            # The window holds whole batches: at most one batch off a steady 500.
            assert abs(rate - 500) <= 50 / window + 0.01


@settings(max_examples=300)
@given(
    st.lists(st.floats(min_value=0, max_value=100), max_size=300),
    st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=30),
)
def test_a_trailing_window_counts_exactly_what_happened_in_it(
    events: list[float], reads: list[float]
) -> None:
    window: TrailingWindow[int] = TrailingWindow(10, 0.0, zero=0)
    counted = 0
    happened: list[float] = []
    # Everything in time order; what happens at the moment of a read is already counted.
    for at, is_read in sorted([(t, False) for t in events] + [(t, True) for t in reads]):
        if not is_read:
            window.note(at, lambda before=counted: before)
            counted += 1
            happened.append(at)
            continue
        start, earlier = window.start(at)
        in_window = counted - (earlier if earlier is not None else counted)
        assert in_window == sum(1 for t in happened if t >= start)
        assert start == 0.0 or at - 11 < start <= at - 10
        assert len(window._marks) <= 12


def test_pg_index_deltas_are_the_same_for_readers_at_any_pace() -> None:
    tracker = IndexUsageTracker(window_seconds=10)

    def reading(scans: int) -> tuple[list[PgTableStats], list[PgIndexStats]]:
        table = PgTableStats("market_data", scans, scans, 100, 8192, 8192)
        index = PgIndexStats("market_data", "ix", scans, scans, 1, 0, 8192, False)
        return [table], [index]

    # Ten index scans a second; one reader every 0.25 s, another at a random-ish pace.
    reports = []
    for step in range(200):
        now = step * 0.1
        if step % 3 == 0 or step % 7 == 0:
            window, report = tracker.update(*reading(step), now)
            reports.append((now, window, report))

    assert reports[0][1] is None  # the first reading: totals, nothing to compare with
    for now, window, report in reports:
        if now < 12:
            continue
        assert window is not None
        assert 10 <= window <= 11.5
        scans = report["market_data"]["indexes"]["ix"]["scans"]
        assert scans == round(window * 10)
        assert report["market_data"]["seq_scans"] == scans
        assert report["market_data"]["indexes"]["ix"]["scans_total"] == round(now * 10)


async def test_unknown_tables_count_as_other() -> None:
    monitor = DatabasePerformanceMonitor()
    for i in range(100):
        monitor.track_query("SELECT", f"scratch_{i}", 1.0)
    metrics = await monitor.collect_metrics()
    assert set(metrics.by_table) == {"other"}
    assert metrics.by_table["other"]["SELECT"]["count"] == 100


async def test_slow_queries_are_logged_in_a_bounded_log() -> None:
    monitor = DatabasePerformanceMonitor(slow_query_threshold_ms=50, slow_query_log_size=3)
    for ms in (10, 60, 70, 80, 90):
        monitor.track_query("SELECT", "market_data", ms)
    metrics = await monitor.collect_metrics()
    assert metrics.slow_queries == 4
    assert [q.execution_time_ms for q in monitor.slow_query_log] == [70, 80, 90]


def test_there_is_one_monitor_per_process() -> None:
    assert get_performance_monitor() is get_performance_monitor()


def _exact_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@settings(max_examples=200)
@given(
    st.lists(st.floats(min_value=0.001, max_value=60_000), min_size=1, max_size=500),
    st.sampled_from([50, 90, 95, 99, 100]),
)
def test_percentiles_are_within_one_percent_of_the_exact_ones(
    values: list[float], p: float
) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert histogram.percentile(p) == pytest.approx(_exact_percentile(values, p), rel=0.0101)
    assert histogram.max_ms == max(values)
    assert histogram.mean_ms == pytest.approx(sum(values) / len(values))


def test_memory_stays_bounded() -> None:
    histogram = LatencyHistogram()
    for i in range(200_000):
        histogram.record(0.01 + (i % 5000) * 0.37)
    assert histogram.count == 200_000
    assert len(histogram.buckets) < 1000


async def test_the_loop_survives_a_failing_collection() -> None:
    class FlakyMonitor(DatabasePerformanceMonitor):
        calls = 0

        async def collect_metrics(self) -> PerformanceMetrics:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("database away")
            return await super().collect_metrics()

    monitor = FlakyMonitor()
    await monitor.start_monitoring(interval_seconds=0.01)
    assert monitor.is_monitoring
    for _ in range(200):
        if len(monitor.history) >= 2:
            break
        await asyncio.sleep(0.01)
    await monitor.stop_monitoring()

    assert monitor.collection_failures == 1
    assert len(monitor.history) >= 2
    assert not monitor.is_monitoring
    await monitor.stop_monitoring()  # a second stop is harmless


def test_prometheus_output_parses_back() -> None:
    monitor = DatabasePerformanceMonitor()
    for ms in (0.2, 0.4, 0.7, 3.0, 250.0):
        monitor.track_query("INSERT", "market_data", ms, rows=2)
    monitor.track_query("SELECT", "alert_logs", 1.0)

    families = {f.name: f for f in text_string_to_metric_families(render(monitor).decode())}

    queries = {
        (s.labels["table"], s.labels["type"]): s.value
        for s in families["tickvault_queries"].samples
    }
    assert queries == {("market_data", "INSERT"): 5, ("alert_logs", "SELECT"): 1}
    rows = {s.labels["table"]: s.value for s in families["tickvault_rows_inserted"].samples}
    assert rows == {"market_data": 10}
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in families["tickvault_query_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["table"] == "market_data"
    ]
    assert dict(buckets)[0.00025] == 1
    assert dict(buckets)[0.001] == 3
    assert dict(buckets)[math.inf] == 5
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    total = next(
        s.value
        for s in families["tickvault_query_duration_seconds"].samples
        if s.name.endswith("_sum") and s.labels["table"] == "market_data"
    )
    assert total == pytest.approx(0.2543)
    assert families["tickvault_slow_queries"].samples[0].value == 1


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "SELECT market_data.id FROM market_data WHERE market_data.instrument_id = ?",
            StatementInfo("SELECT", "market_data"),
        ),
        ("INSERT INTO alert_logs (rule_id) VALUES ($1)", StatementInfo("INSERT", "alert_logs")),
        ('UPDATE "instruments" SET name=$1', StatementInfo("UPDATE", "instruments")),
        ("DELETE FROM market_data WHERE id = ?", StatementInfo("DELETE", "market_data")),
        (
            "WITH latest AS (SELECT 1 FROM x) SELECT * FROM market_data",
            StatementInfo("SELECT", "market_data"),
        ),
        ("COPY market_data (price) FROM STDIN", StatementInfo("COPY", "market_data")),
        ("PRAGMA foreign_keys", StatementInfo("OTHER", None)),
        ("BEGIN", None),
        ("COMMIT", None),
    ],
)
def test_statements_are_classified(statement: str, expected: StatementInfo | None) -> None:
    assert classify(statement) == expected


def test_sqlite_plans_are_classified() -> None:
    search = classify_plan(
        ["SEARCH market_data USING INDEX ix_market_data_instrument_price (instrument_id=?)"]
    )
    scan = classify_plan(["SCAN market_data"])
    by_pk = classify_plan(["SEARCH instruments USING INTEGER PRIMARY KEY (rowid=?)"])
    assert (search.used_index, search.indexes) == (True, ("ix_market_data_instrument_price",))
    assert (scan.used_index, scan.full_scans) == (False, ("market_data",))
    assert by_pk.used_index
