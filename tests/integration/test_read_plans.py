"""The reads' query plans at head, on SQLite (EXPLAIN QUERY PLAN) and PostgreSQL (EXPLAIN).

Each read runs for real; the statements it sends are captured and explained with the same
parameters. What a user would notice on a large table: latest, a time range, OHLCV bars and
the alert rules' previous tick walk ix_market_data_instrument_timestamp (no full scan, no
sort step for their ordering); purge and "list deleted" walk the partial deleted_at index.
SQLite plans without statistics (as a user's database does); PostgreSQL after ANALYZE.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.api import create_app
from tickvault.database.engine import create_session_factory
from tickvault.models import AlertLog, AlertRule, Instrument, MarketData
from tickvault.repositories.alert_logs import AlertLogRepository
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services.alerts import AlertService
from tickvault.services.purge import purge_soft_deleted

T0 = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)
TRADING, IDLE, NEVER = 50, 51, 52  # instruments 1-50 trade; 51 once, at the start; 52 never
TICKS = 20_000
NEW_INDEX = "ix_market_data_instrument_timestamp"
Sessions = async_sessionmaker[AsyncSession]


async def _fill(engine: AsyncEngine) -> None:
    instruments = [{"id": i, "symbol": f"S{i}", "name": f"S{i}"} for i in range(1, NEVER + 1)]
    rules = [
        {"id": i, "name": f"r{i}", "instrument_id": i, "condition": "pct_change_above",
         "threshold": 5}
        for i in range(1, NEVER + 1)
    ]  # fmt: skip
    ticks = [
        {
            "instrument_id": 1 + n % TRADING,
            # Ticks in pairs share a timestamp: the id breaks the tie.
            "timestamp": T0 + timedelta(milliseconds=10 * (n // 2)),
            "price": 100.0 + n % 97,
            "volume": 10,
            "deleted_at": T0 if n % 100 == 0 else None,
        }
        for n in range(TICKS)
    ]
    # Every row names every column: an executemany takes its columns from the first row.
    idle = {"instrument_id": IDLE, "timestamp": T0 - timedelta(days=1), "price": 1.0}
    ticks.append({**ticks[0], **idle, "deleted_at": None})
    logs = [
        {
            "rule_id": 1 + n % TRADING,
            "instrument_id": 1 + n % TRADING,
            "timestamp": T0 + timedelta(seconds=n),
            "fired_status": "fired",
            "deleted_at": T0 if n % 100 == 0 else None,
        }
        for n in range(TICKS)
    ]
    async with engine.begin() as connection:
        for model, rows in (
            (Instrument, instruments),
            (AlertRule, rules),
            (MarketData, ticks),
            (AlertLog, logs),
        ):
            await connection.execute(insert(model.__table__), rows)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("ANALYZE"))


@pytest.fixture
async def filled(engine: AsyncEngine) -> AsyncEngine:
    await _fill(engine)
    return engine


async def plans_of(
    engine: AsyncEngine, read: Callable[[Sessions], Awaitable[Any]], table: str = "market_data"
) -> list[str]:
    """Run ``read``; the plan of every statement it sent that reads ``table``, as text."""
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if re.search(rf"\b{table}\b", statement) and not statement.startswith("INSERT"):
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await read(create_session_factory(engine))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert sent, "the read sent no statement on " + table
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    plans = []
    async with engine.connect() as connection:
        for statement, parameters in sent:
            rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
            plans.append("\n".join(str(row[-1]) for row in rows))
    return plans


def full_scans(plan: str, table: str = "market_data") -> list[str]:
    """Plan lines that read every row (or every index entry) of ``table``."""
    pattern = rf"^\s*(?:\|--|`--)?\s*SCAN {table}\b|Seq Scan on {table}\b"
    return [line for line in plan.splitlines() if re.search(pattern, line)]


def sorts(plan: str) -> list[str]:
    """Plan lines that sort rows: SQLite's temporary B-tree, PostgreSQL's Sort node."""
    return [line for line in plan.splitlines() if re.search(r"TEMP B-TREE|\bSort\b", line)]


def uses(plan: str, index: str) -> bool:
    return re.search(rf"(USING (COVERING )?INDEX|Scan(?: Backward)? using|Scan on) {index}\b",
                     plan) is not None  # fmt: skip


def assert_served_by(plan: str, index: str, *, ordered: bool = True) -> None:
    assert uses(plan, index), plan
    assert not full_scans(plan), plan
    if ordered:
        assert not sorts(plan), plan


async def _latest(sessions: Sessions) -> None:
    async with sessions() as session:
        latest = await MarketDataRepository(session).latest()
    assert {tick.instrument_id for tick in latest} == set(range(1, IDLE + 1))


async def test_latest_is_one_backward_probe_per_instrument(filled: AsyncEngine) -> None:
    (plan,) = await plans_of(filled, _latest)
    assert_served_by(plan, NEW_INDEX)


async def test_a_range_and_its_next_page_walk_the_index_in_order(filled: AsyncEngine) -> None:
    start, end = T0 + timedelta(seconds=10), T0 + timedelta(seconds=40)

    async def pages(sessions: Sessions) -> None:
        async with sessions() as session:
            repo = MarketDataRepository(session)
            first = await repo.range(7, start, end, limit=5)
            assert first.next_cursor is not None
            await repo.range(7, start, end, limit=5, after=first.next_cursor)

    first, following = await plans_of(filled, pages)
    assert_served_by(first, NEW_INDEX)
    assert_served_by(following, NEW_INDEX)


async def test_ohlcv_reads_only_the_instruments_range(filled: AsyncEngine) -> None:
    async def bars(sessions: Sessions) -> None:
        async with sessions() as session:
            await MarketDataRepository(session).ohlcv(7, "1m", T0, T0 + timedelta(minutes=2))

    (plan,) = await plans_of(filled, bars)
    # The bars are grouped by bucket after the index hands over the range: that sort is the
    # aggregation's, not an ordering the index could have given.
    assert_served_by(plan, NEW_INDEX, ordered=False)


async def test_the_alert_rules_previous_tick_is_one_backward_probe(filled: AsyncEngine) -> None:
    async def evaluate(sessions: Sessions) -> None:
        tick = (7, T0 + timedelta(hours=1), 150.0, None, None, None, None, None, 10)
        await AlertService(sessions).evaluate([tick])

    (plan,) = await plans_of(filled, evaluate)
    assert_served_by(plan, NEW_INDEX)


@pytest.mark.parametrize("table", ["market_data", "alert_logs"])
async def test_purge_and_list_deleted_use_the_partial_index(
    filled: AsyncEngine, table: str
) -> None:
    index = f"ix_{table}_deleted_at"

    async def list_deleted(sessions: Sessions) -> None:
        async with sessions() as session:
            if table == "market_data":
                page = await MarketDataRepository(session).find_deleted(limit=10)
            else:
                page = await AlertLogRepository(session).find(limit=10, deleted=True)
        assert len(page.items) == 10

    async def purge(sessions: Sessions) -> None:
        report = await purge_soft_deleted(sessions, older_than=timedelta(days=1), batch_size=15)
        assert report.deleted[table] == TICKS // 100

    for plan in await plans_of(filled, list_deleted, table):
        assert uses(plan, index), plan
        assert not full_scans(plan, table), plan
    delete_plans = await plans_of(filled, purge, table)
    assert len(delete_plans) > 1
    for plan in delete_plans:
        assert uses(plan, index), plan
        assert not full_scans(plan, table), plan


def whole_sorts(plan: str) -> list[str]:
    """Plan lines that sort every row read, not only rows that share the index's leading
    key (SQLite's "RIGHT PART OF ORDER BY", PostgreSQL's Incremental Sort)."""
    pattern = r"USE TEMP B-TREE FOR (ORDER BY|GROUP BY|DISTINCT)|^\s*(->\s+)?Sort\s+\("
    return [line for line in plan.splitlines() if re.search(pattern, line)]


async def test_the_demos_start_up_reads_are_index_probes(filled: AsyncEngine) -> None:
    """`make run`'s service from its start to its first committed batch of the simulated feed:
    every read it sends to market_data or alert_logs (the feed's starting prices, the alert
    rules' state and previous ticks) walks an index, without a full scan; market_data's walk
    ix_market_data_instrument_timestamp without sorting the rows they read. Before
    a7c3e9d15b42 the previous tick sorted every tick of the instrument on SQLite (151 ms at
    300,000 ticks): the slow query logged at each start. (alert_logs' "last status" orders by
    timestamp and id, which no index gives whole: a rule's rows that share a timestamp are
    sorted, or all of them when the statistics expect a handful.)"""
    url = filled.url.render_as_string(hide_password=False)
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if re.search(r"\b(market_data|alert_logs)\b", statement) and not re.match(
            r"\s*(INSERT|SELECT nextval)", statement
        ):
            sent.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        app = create_app(url, simulate_rate=50)
        async with app.router.lifespan_context(app):
            feed = app.state.runtime.feed
            for _ in range(1200):
                if feed.stats.batches:
                    break
                await asyncio.sleep(0.05)
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    assert feed.stats.batches, feed.stats

    explain = "EXPLAIN QUERY PLAN " if filled.dialect.name == "sqlite" else "EXPLAIN "
    tables = set()
    async with filled.connect() as connection:
        for statement, parameters in dict.fromkeys(sent):
            rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
            plan = "\n".join(str(row[-1]) for row in rows)
            assert not full_scans(plan, "market_data"), (statement, plan)
            assert not full_scans(plan, "alert_logs"), (statement, plan)
            if "market_data" in statement:
                assert uses(plan, NEW_INDEX), (statement, plan)
                assert not whole_sorts(plan), (statement, plan)
            tables |= set(re.findall(r"\b(market_data|alert_logs)\b", statement))
    assert tables == {"market_data", "alert_logs"}
