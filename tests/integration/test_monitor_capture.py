"""The monitor attached to a real engine, on SQLite and PostgreSQL: automatic capture,
index usage, pool figures and table analysis."""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import UnknownTableError
from tickvault.models import AlertLog, AlertRule, Instrument, MarketData
from tickvault.monitoring.prometheus import render
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services.database_performance import DatabasePerformanceMonitor

T0 = datetime(2024, 7, 1, tzinfo=UTC)
LABELS = ("table", "type", "index")
POOL_FIGURES = (
    "size",
    "checked_out",
    "checked_in",
    "overflow",
    "connects_total",
    "checkouts_total",
    "invalidations_total",
)


class Clock:
    """``time.perf_counter``, frozen or moved on when a test says so."""

    def __init__(self, frozen: bool = False) -> None:
        self.frozen = time.perf_counter() if frozen else None
        self.skipped = 0.0

    def __call__(self) -> float:
        return (self.frozen or time.perf_counter()) + self.skipped


@pytest.fixture
async def monitor(engine: AsyncEngine) -> AsyncIterator[DatabasePerformanceMonitor]:
    # A window far longer than any test: figures cover everything since the monitor began.
    monitor = DatabasePerformanceMonitor(engine, window_seconds=600)
    yield monitor
    await monitor.stop_monitoring()
    monitor.uninstrument()


async def _add_instruments(engine: AsyncEngine, n: int) -> None:
    async with create_session_factory(engine).begin() as session:
        session.add_all(Instrument(symbol=f"S{i}", name=f"S{i}") for i in range(n))


def _ticks(n: int, instruments: int = 1) -> list[dict[str, object]]:
    return [
        {
            "instrument_id": 1 + i % instruments,
            "timestamp": T0 + timedelta(seconds=i),
            "price": 100.0 + i % 7,
            "volume": i,
        }
        for i in range(n)
    ]


async def test_a_bulk_insert_counts_all_its_rows_once(engine: AsyncEngine) -> None:
    await _add_instruments(engine, 1)
    clock = Clock(frozen=True)
    monitor = DatabasePerformanceMonitor(engine, window_seconds=10, clock=clock)
    sessions = create_session_factory(engine)
    try:
        async with sessions.begin() as session:
            await session.execute(insert(MarketData), _ticks(1000))
        clock.skipped += 4
        core = await monitor.collect_metrics()
        clock.skipped += 11  # the Core insert leaves the trailing window
        async with sessions.begin() as session:
            session.add_all(MarketData(**tick) for tick in _ticks(1000))
        clock.skipped += 5
        orm = await monitor.collect_metrics()
    finally:
        monitor.uninstrument()

    for metrics in (core, orm):
        assert metrics.by_table["market_data"]["INSERT"]["rows"] == 1000
    # 1000 rows over the 4 s the monitor has existed; then 1000 rows over the 10 s trailing
    # window (which may reach back up to a tenth further), the Core rows left behind.
    assert (core.window_seconds, core.insert_rate) == (4.0, 250.0)
    assert 10.0 <= orm.window_seconds <= 11.0
    assert 1000 / 11 <= orm.insert_rate <= 100.0
    assert orm.total_rows_inserted == 2000


async def test_errors_are_counted_and_the_monitors_own_queries_are_not(
    engine: AsyncEngine,
) -> None:
    await _add_instruments(engine, 1)
    clock = Clock(frozen=True)
    monitor = DatabasePerformanceMonitor(engine, window_seconds=10, clock=clock)
    try:
        with pytest.raises(DBAPIError):
            async with engine.begin() as connection:
                await connection.execute(
                    insert(MarketData), [{"instrument_id": 999, "timestamp": T0}]
                )
        first = await monitor.collect_metrics()
        second = await monitor.collect_metrics()
        await monitor.analyze_table_performance("market_data")
        third = await monitor.collect_metrics()
        clock.skipped += 11
        later = await monitor.collect_metrics()
    finally:
        monitor.uninstrument()

    assert first.errors == 1
    assert first.by_table["market_data"]["INSERT"]["errors"] == 1
    # Collecting and analysing run queries of their own; none is counted, and reading
    # resets nothing: the same moment, the same figures.
    assert first.total_queries == second.total_queries == third.total_queries == later.total_queries
    assert first.by_table == second.by_table == third.by_table
    assert (third.errors, third.query_rate) == (first.errors, first.query_rate)
    assert (later.errors, later.query_rate, later.by_table) == (0, 0.0, {})


async def test_slow_query_log_keeps_statement_text_never_values(
    engine: AsyncEngine,
) -> None:
    monitor = DatabasePerformanceMonitor(engine, slow_query_threshold_ms=0.000001)
    try:
        async with create_session_factory(engine)() as session:
            await session.execute(select(Instrument).where(Instrument.symbol == "SECRET-123"))
        logged = [q.statement for q in monitor.slow_query_log if q.table_name == "instruments"]
        assert logged
        assert "FROM instruments" in logged[0]
        assert all("SECRET-123" not in statement for statement in logged)
    finally:
        monitor.uninstrument()


async def test_index_usage_tells_an_indexed_query_from_a_full_scan(
    head_url: str, engine: AsyncEngine, monitor: DatabasePerformanceMonitor
) -> None:
    await _add_instruments(engine, 200)
    async with engine.begin() as connection:
        await connection.execute(insert(MarketData), _ticks(20_000, instruments=200))
        if engine.dialect.name == "postgresql":
            await connection.execute(text("ANALYZE market_data"))
    await monitor.collect_metrics()

    # A separate engine for the application's reads: closing it makes PostgreSQL publish
    # that backend's statistics at once instead of within the next ten seconds.
    reader = create_engine(head_url)
    try:
        await _read_and_check(reader, monitor)
    finally:
        monitor.uninstrument()
        await reader.dispose()


async def _read_and_check(reader: AsyncEngine, monitor: DatabasePerformanceMonitor) -> None:
    monitor.instrument(reader)
    sessions = create_session_factory(reader)
    indexed = (
        select(MarketData.price)
        .where(MarketData.instrument_id == 7)
        .execution_options(include_deleted=True)
    )
    unindexed = (
        select(MarketData.price)
        .where(MarketData.volume == 4242)
        .execution_options(include_deleted=True)
    )
    async with sessions() as session:
        for _ in range(2):
            assert len((await session.execute(indexed)).all()) == 100
            assert len((await session.execute(unindexed)).all()) == 1
    await reader.dispose()

    usage = (await monitor.collect_metrics()).index_usage
    if reader.dialect.name == "postgresql":
        # A closing backend publishes its statistics as it exits: collect until they arrive
        # (each collection covers the window since the first, before the reads).
        for _ in range(50):
            market = usage["tables"]["market_data"]
            index_scans = market["indexes"]["ix_market_data_instrument_timestamp"]["scans"]
            seq_scans = market["seq_scans"]
            if index_scans >= 2 and seq_scans >= 2:
                break
            await asyncio.sleep(0.1)
            usage = (await monitor.collect_metrics()).index_usage
        assert (index_scans, seq_scans) == (2, 2)
        assert usage["window_seconds"] > 0
    else:
        # SQLite: the plans were learnt in that collection; the next executions use them.
        async with sessions() as session:
            await session.execute(indexed)
            await session.execute(unindexed)
        metrics = await monitor.collect_metrics()
        selects = metrics.by_table["market_data"]["SELECT"]
        assert (selects["index_used"], selects["full_scans"]) == (1, 1)
        assert "ix_market_data_instrument_timestamp" in metrics.index_usage["indexes_seen_in_plans"]


async def test_the_latest_ticks_are_counted_as_reads_of_market_data(
    engine: AsyncEngine, monitor: DatabasePerformanceMonitor
) -> None:
    """latest() reads market_data, though on PostgreSQL its first FROM is instruments (a
    LATERAL probe per instrument): a market_data dashboard must see it."""
    await _add_instruments(engine, 3)
    async with engine.begin() as connection:
        await connection.execute(insert(MarketData), _ticks(30, instruments=3))
    before = (await monitor.collect_metrics()).by_table
    async with create_session_factory(engine)() as session:
        for _ in range(4):
            assert len(await MarketDataRepository(session).latest()) == 3
    after = (await monitor.collect_metrics()).by_table

    def reads(by_table: dict[str, Any], table: str) -> float:
        return float(by_table.get(table, {}).get("SELECT", {}).get("count", 0))

    assert reads(after, "market_data") - reads(before, "market_data") >= 4
    assert reads(after, "instruments") - reads(before, "instruments") < 4


async def test_pool_figures_under_concurrent_sessions(head_url: str) -> None:
    engine = create_engine(head_url, pool_size=2, max_overflow=3)
    monitor = DatabasePerformanceMonitor(engine)
    release = asyncio.Event()
    all_holding = asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            holding += 1
            if holding == 4:
                all_holding.set()
            await release.wait()

    try:
        tasks = [asyncio.create_task(hold()) for _ in range(4)]
        await asyncio.wait_for(all_holding.wait(), timeout=30)
        busy = (await monitor.collect_metrics()).connection_pool
        release.set()
        await asyncio.gather(*tasks)
        idle = monitor.pool_status()
    finally:
        monitor.uninstrument()
        await engine.dispose()

    # The monitor's own collection borrowed a fifth connection.
    assert busy["size"] == 2
    assert busy["max_overflow"] == 3
    assert busy["checked_out"] >= 4
    assert busy["overflow"] >= 2
    assert idle["checked_out"] == 0
    assert idle["checkouts"] >= 5
    assert idle["connects"] >= 4


def _overflow_gauge(monitor: DatabasePerformanceMonitor) -> float:
    families = text_string_to_metric_families(render(monitor).decode())
    (family,) = (f for f in families if f.name == "tickvault_pool_overflow")
    return float(family.samples[0].value)


async def test_pool_overflow_counts_connections_beyond_the_pool_size_never_below_zero(
    head_url: str,
) -> None:
    # QueuePool's own overflow() starts at -pool_size: the figure the API and Prometheus
    # report must be what their HELP says, connections open beyond the pool size.
    engine = create_engine(head_url, pool_size=2, max_overflow=3)
    monitor = DatabasePerformanceMonitor(engine)

    def look() -> tuple[int, int, float]:
        status = monitor.pool_status()
        return status["overflow"], status["checked_out"], _overflow_gauge(monitor)

    try:
        seen = [look()]
        async with contextlib.AsyncExitStack() as held:
            for _ in range(4):
                connection = await held.enter_async_context(engine.connect())
                await connection.execute(text("SELECT 1"))
                seen.append(look())
        seen.append(look())
    finally:
        monitor.uninstrument()
        await engine.dispose()

    # (overflow, checked out, Prometheus gauge) with 0, 1, 2, 3, 4 connections held, then
    # none: the two beyond the pool size are closed as they come back.
    assert seen == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 3, 1), (2, 4, 2), (0, 0, 0)]


@pytest.mark.parametrize("table", ["instruments", "alert_rules", "market_data", "alert_logs"])
async def test_every_table_can_be_analysed(
    engine: AsyncEngine, monitor: DatabasePerformanceMonitor, table: str
) -> None:
    await _add_instruments(engine, 3)
    async with create_session_factory(engine).begin() as session:
        rule = AlertRule(name="r", instrument_id=1, condition="price_above", threshold=1)
        session.add(AlertLog(rule=rule, instrument_id=1, timestamp=T0, fired_status="fired"))
        await session.execute(insert(MarketData), _ticks(50))

    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text(f"ANALYZE {table}"))  # table: one of four literals

    analysis = await monitor.analyze_table_performance(table)

    expected_rows = {"instruments": 3, "alert_rules": 1, "market_data": 50, "alert_logs": 1}
    assert analysis["table"] == table
    # SQLite counts; PostgreSQL estimates, and after ANALYZE of a small table the estimate is
    # the count.
    rows_key = "rows" if engine.dialect.name == "sqlite" else "rows_estimate"
    assert analysis[rows_key] == expected_rows[table]
    # Small tables: no index is worth dropping yet, and no index duplicates another. Read
    # by a monitor that saw none of the writes: advice on uneven INSERT latency depends on
    # the machine's timing.
    quiet = DatabasePerformanceMonitor(engine)
    try:
        advice = (await quiet.analyze_table_performance(table))["recommendations"]
    finally:
        quiet.uninstrument()
    assert advice == [f"Nothing to change on {table} from the figures so far."]
    assert [i for i, index in analysis["indexes"].items() if index["duplicate_of"]] == []
    if table == "market_data":
        assert set(analysis["indexes"]) == {
            "ix_market_data_timestamp_instrument",
            "ix_market_data_instrument_timestamp",
            "ix_market_data_deleted_at",
        }
        assert analysis["latencies"]["INSERT"]["rows"] == 50


async def test_a_duplicate_and_an_unused_index_on_a_large_table_are_named(
    engine: AsyncEngine, monitor: DatabasePerformanceMonitor
) -> None:
    await _add_instruments(engine, 10)
    async with engine.begin() as connection:
        await connection.execute(insert(MarketData), _ticks(12_000, instruments=10))
        # A prefix of ix_market_data_instrument_timestamp (a duplicate), and an index on a
        # column no query filters by (unused).
        await connection.execute(
            text("CREATE INDEX ix_spare_instrument ON market_data (instrument_id)")
        )
        await connection.execute(text("CREATE INDEX ix_spare_volume ON market_data (volume)"))
        if engine.dialect.name == "postgresql":
            await connection.execute(text("ANALYZE market_data"))

    analysis = await monitor.analyze_table_performance("market_data")
    indexes = analysis["indexes"]
    rows_key = "rows" if engine.dialect.name == "sqlite" else "rows_estimate"
    assert analysis[rows_key] == 12_000
    assert indexes["ix_spare_instrument"]["duplicate_of"] == "ix_market_data_instrument_timestamp"
    assert (indexes["ix_spare_volume"]["duplicate_of"], indexes["ix_spare_volume"]["unused"]) == (
        None,
        True,
    )
    why = {
        "sqlite": "no tracked query plan uses it",
        "postgresql": "no scans since statistics were reset",
    }[engine.dialect.name]
    # The advice on the other indexes and the scan share depends on what the migrations and
    # the statistics collector did; the two indexes built here have exactly these.
    assert [a for a in analysis["recommendations"] if "ix_spare" in a] == [
        "Index ix_spare_instrument (instrument_id) is covered by "
        "ix_market_data_instrument_timestamp, whose leading columns are the same: "
        "drop ix_spare_instrument to make every insert cheaper.",
        f"Index ix_spare_volume has not been used ({why}); if that holds over a full business "
        "cycle, dropping it makes inserts cheaper.",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "nosuchtable",
        "market_data; DROP TABLE instruments",
        '"market_data"',
        "MARKET_DATA",
        "market_data --",
        "",
    ],
)
async def test_unknown_or_hostile_table_names_are_refused(
    engine: AsyncEngine, monitor: DatabasePerformanceMonitor, name: str
) -> None:
    with pytest.raises(UnknownTableError, match="unknown table"):
        await monitor.analyze_table_performance(name)
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM instruments"))).scalar() == 0


def _scrape(monitor: DatabasePerformanceMonitor) -> dict[str, dict[tuple[str, ...], float]]:
    """Every sample of ``render(monitor)`` but the histogram's: name → {(table, type or
    index): value}."""
    samples: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(render(monitor).decode()):
        for sample in family.samples:
            labels = tuple(sample.labels[k] for k in LABELS if k in sample.labels)
            if sample.name.endswith(("_bucket", "_created")):
                continue
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


async def test_prometheus_shows_the_errors_pool_and_indexes_the_monitor_saw(
    engine: AsyncEngine,
) -> None:
    """A fresh engine, its statements known one by one: the scrape has exactly the errors
    they caused, the pool's connections and checkouts, and (PostgreSQL) a series per index
    of the database with the scans and size the monitor collected."""
    monitor = DatabasePerformanceMonitor(engine, window_seconds=600)
    try:
        async with engine.begin() as connection:  # checkout 1, the pool's first connection
            await connection.execute(insert(Instrument), [{"symbol": "A", "name": "A"}])
            await connection.execute(insert(MarketData), [{"instrument_id": 1, "timestamp": T0}])
        for statement in (
            insert(MarketData).values(instrument_id=999, timestamp=T0),  # no such instrument
            Instrument.__table__.delete().where(Instrument.id == 1),  # RESTRICT: it has a tick
            Instrument.__table__.delete().where(Instrument.id == 1),
        ):  # checkouts 2 to 4
            with pytest.raises(DBAPIError, match=r"(?i)foreign key"):
                async with engine.begin() as connection:
                    await connection.execute(statement)
        collected = await monitor.collect_metrics()  # checkout 5 (statistics, uncounted)
        scraped = _scrape(monitor)
    finally:
        monitor.uninstrument()

    errors = {labels: v for labels, v in scraped["tickvault_query_errors_total"].items() if v}
    assert errors == {("market_data", "INSERT"): 1.0, ("instruments", "DELETE"): 2.0}
    assert scraped["tickvault_queries_total"][("market_data", "INSERT")] == 1.0
    assert scraped["tickvault_rows_inserted_total"] == {
        ("instruments",): 1.0,
        ("market_data",): 1.0,
    }
    pool = engine.sync_engine.pool
    assert {name: scraped[f"tickvault_pool_{name}"][()] for name in POOL_FIGURES} == {
        "size": pool.size(),  # type: ignore[attr-defined]
        "checked_out": 0,
        "checked_in": 1,
        "overflow": 0,
        "connects_total": 1,
        "checkouts_total": 5,
        "invalidations_total": 0,
    }
    assert scraped["tickvault_monitor_collection_failures_total"] == {(): 0.0}

    if engine.dialect.name == "sqlite":  # no index statistics to show
        assert [name for name in scraped if "index" in name] == []
        return
    async with engine.connect() as connection:
        indexes = {
            (table, index): size
            for table, index, size in await connection.execute(
                text(
                    "SELECT tablename, indexname, pg_relation_size(indexname::regclass) "
                    "FROM pg_indexes WHERE schemaname = 'public'"
                )
            )
        }
    assert len(indexes) == 18  # every index at head, alembic_version's key included
    assert scraped["tickvault_index_size_bytes"] == indexes
    tables = collected.index_usage["tables"]
    assert scraped["tickvault_index_scans_total"] == {
        (table, index): tables[table]["indexes"][index]["scans_total"] for table, index in indexes
    }


def _failures_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tickvault.monitor"]


async def test_failed_collections_are_logged_counted_scraped_and_monitoring_goes_on(
    head_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database the monitor cannot open (a SQLite file in a missing folder, a PostgreSQL
    database that does not exist): every background collection fails, is logged, and the
    next still runs; the scrape counts exactly the failures logged."""
    url = sa.make_url(head_url)
    missing = (
        url.set(database=str(Path(str(url.database)).parent / "missing" / "ticks.db"))
        if url.get_backend_name() == "sqlite"
        else url.set(database=f"{url.database}_missing")
    )
    engine = create_engine(missing)
    monitor = DatabasePerformanceMonitor(engine, window_seconds=600)
    try:
        with caplog.at_level(logging.ERROR, logger="tickvault.monitor"):
            await monitor.start_monitoring(interval_seconds=0.01)
            # Until the second failure is logged or the loop has ended (600 s: a hang).
            for _ in range(60_000):
                if len(_failures_logged(caplog)) >= 2 or not monitor.is_monitoring:
                    break
                await asyncio.sleep(0.01)
            went_on = monitor.is_monitoring
            await monitor.stop_monitoring()
    finally:
        monitor.uninstrument()
        await engine.dispose()

    logged = _failures_logged(caplog)
    assert went_on
    assert len(logged) == monitor.collection_failures >= 2
    assert {r.getMessage() for r in logged} == {
        "performance collection failed; retrying next interval"
    }
    assert monitor.history == deque()
    assert _scrape(monitor)["tickvault_monitor_collection_failures_total"] == {
        (): float(len(logged))
    }


def _sync_url(head_url: str) -> sa.URL:
    """The database behind ``head_url`` with a synchronous driver (sqlite3, psycopg)."""
    url = sa.make_url(head_url)
    sqlite = url.get_backend_name() == "sqlite"
    return url.set(drivername="sqlite" if sqlite else "postgresql+psycopg")


async def test_the_monitor_on_a_sync_engine(head_url: str) -> None:
    """A plain SQLAlchemy ``Engine`` instrumented as the docs show: its statements, rows,
    errors and pool counted; statistics and table analysis read through an async engine of
    the same database, which stop_monitoring() closes."""
    engine = sa.create_engine(_sync_url(head_url))
    clock = Clock(frozen=True)
    monitor = DatabasePerformanceMonitor(window_seconds=10, clock=clock)
    monitor.instrument(engine)
    try:
        with engine.begin() as connection:  # checkout 1
            connection.execute(insert(Instrument), [{"symbol": "A", "name": "A"}])
            connection.execute(insert(MarketData), _ticks(500))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:  # checkout 2
            connection.execute(insert(Instrument), [{"symbol": "A", "name": "again"}])
        with engine.connect() as connection:  # checkout 3
            ticks = connection.execute(
                select(MarketData.id).where(MarketData.instrument_id == 1)
            ).all()
            if engine.dialect.name == "postgresql":
                connection.execute(text("ANALYZE market_data"))
                connection.commit()
        assert len(ticks) == 500
        clock.skipped += 5
        metrics = await monitor.collect_metrics()
        analysis = await monitor.analyze_table_performance("market_data")
    finally:
        await monitor.stop_monitoring()
        monitor.uninstrument()
        engine.dispose()

    assert (metrics.window_seconds, metrics.total_rows_inserted, metrics.insert_rate) == (
        5.0,
        501,
        100.2,
    )
    analyzed = {("other", "OTHER"): (1, 0, 0)} if engine.dialect.name == "postgresql" else {}
    assert {
        (table, kind): (figures["count"], figures["rows"], figures["errors"])
        for table, kinds in metrics.by_table.items()
        for kind, figures in kinds.items()
    } == {
        ("instruments", "INSERT"): (1, 1, 1),  # the second INSERT failed: a taken symbol
        ("market_data", "INSERT"): (1, 500, 0),  # one executemany of 500 rows
        ("market_data", "SELECT"): (1, 0, 0),
        **analyzed,  # ANALYZE market_data, PostgreSQL only
    }
    assert metrics.errors == 1
    pool = metrics.connection_pool
    assert (pool["pool_class"], pool["connects"], pool["checkouts"], pool["checked_out"]) == (
        "QueuePool",
        1,
        3,
        0,
    )
    assert metrics.index_usage["engine"] == engine.dialect.name
    assert analysis["rows" if engine.dialect.name == "sqlite" else "rows_estimate"] == 500
    assert monitor._owned_engine is None  # closed by stop_monitoring()
