"""`partition` / `unpartition` on PostgreSQL, on a table of thousands of rows over several
days: every row and value kept, indexes and foreign keys equivalent, writes made during the
copy included, an interrupted conversion leaving market_data whole, the live writer, COPY,
reads and the later revisions working on the partitioned table; SQLite refuses."""

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.conftest import postgres_admin_url
from tests.integration.test_read_plans import plans_of
from tickvault.bench.data import throwaway
from tickvault.database.bulk import write_ticks
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import MigrationError, ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.monitoring.analysis import analyze_table
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services import partitioning, schema
from tickvault.services.market_data import MarketDataService

DAYS = 6
ROWS = 6_000
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=DAYS - 1
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway("postgresql", postgres_admin_url()) as url:
        schema.upgrade(url, "head")
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    await seed(engine)
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine) -> None:
    """ROWS ticks of 3 instruments spread over DAYS UTC days up to today; every 7th
    soft-deleted, some NULL prices and volumes."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO instruments (symbol, name) "
                "VALUES ('ES', 'e'), ('NQ', 'n'), ('CL', 'c')"
            )
        )
        step = DAYS * 86_400 // ROWS
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price, bid, ask, volume, "
                "deleted_at) SELECT 1 + g % 3, "
                "CAST(:start AS timestamptz) + make_interval(secs => g * :step), "
                "CASE WHEN g % 11 = 0 THEN NULL ELSE 100 + g / 7.0 END, 99.5 + g, 100.5 + g, "
                "CASE WHEN g % 13 = 0 THEN NULL ELSE g * 10 END, "
                "CASE WHEN g % 7 = 0 "
                "THEN CAST(:start AS timestamptz) + make_interval(secs => g) END "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"start": START, "step": step, "n": ROWS},
        )


async def rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(ROWS_SQL))]


ROWS_SQL = "SELECT * FROM market_data ORDER BY id"


async def shape(engine: AsyncEngine) -> dict[str, Any]:
    """What must be equivalent whatever the layout: index and foreign-key definitions."""
    async with engine.connect() as connection:
        indexes = await connection.execute(
            text(
                "SELECT indexname, replace(indexdef, ' ONLY ', ' ') FROM pg_indexes "
                "WHERE tablename = 'market_data' AND indexname <> 'pk_market_data'"
            )
        )
        keys = await connection.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'market_data'::regclass AND contype = 'f'"
            )
        )
        return {"indexes": set(indexes), "keys": set(keys)}


async def catalog(engine: AsyncEngine) -> tuple[str, str, list[str]]:
    """(relkind, primary key definition, partitions)."""
    async with engine.connect() as connection:
        kind = await connection.scalar(
            text("SELECT relkind::text FROM pg_class WHERE oid = 'market_data'::regclass")
        )
        key = await connection.scalar(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'market_data'::regclass AND contype = 'p'"
            )
        )
        found = await connection.execute(
            text(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'market_data'::regclass"
            )
        )
        return kind, key, sorted(name for (name,) in found)


async def leftovers(engine: AsyncEngine) -> tuple[bool, int]:
    async with engine.connect() as connection:
        table = await connection.scalar(text("SELECT to_regclass('market_data_new') IS NOT NULL"))
        triggers = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_trigger "
                "WHERE tgrelid = 'market_data'::regclass AND NOT tgisinternal"
            )
        )
        return bool(table), int(triggers or 0)


def day_names(days: int, ahead: int) -> list[str]:
    return [f"market_data_p{START + timedelta(days=d):%Y%m%d}" for d in range(days + ahead)] + [
        "market_data_default"
    ]


async def test_partition_then_unpartition_keeps_every_row(pg: AsyncEngine, pg_url: str) -> None:
    before, before_shape = await rows(pg), await shape(pg)
    assert len(before) == ROWS

    report = await partitioning.partition(pg, "1d", ahead=2, batch_size=700)

    assert report.converted
    assert report.rows_moved == ROWS
    kind, key, partitions = await catalog(pg)
    assert (kind, key) == ("p", 'PRIMARY KEY (id, "timestamp")')
    assert partitions == sorted(day_names(DAYS, 2))
    assert report.partitions == day_names(DAYS, 2)
    assert await rows(pg) == before
    assert await shape(pg) == before_shape
    assert await leftovers(pg) == (False, 0)
    async with pg.connect() as connection:
        # Each row in its own day's partition; the default holds none.
        per_day = dict(
            (
                await connection.execute(
                    text("SELECT tableoid::regclass::text, count(*) FROM market_data GROUP BY 1")
                )
            ).all()
        )
        expected = dict(
            (
                await connection.execute(
                    text(
                        "SELECT 'market_data_p' || to_char(timestamp AT TIME ZONE 'UTC', "
                        "'YYYYMMDD'), count(*) FROM market_data GROUP BY 1"
                    )
                )
            ).all()
        )
        assert per_day == expected
        assert len(per_day) == DAYS
    # Autogenerate leaves the partitions alone: the models and the schema still agree.
    await asyncio.to_thread(command.check, schema.alembic_config(pg_url))

    back = await partitioning.unpartition(pg, batch_size=1_000)

    assert back.converted
    assert back.rows_moved == ROWS
    assert await catalog(pg) == ("r", "PRIMARY KEY (id)", [])
    assert await rows(pg) == before
    assert await shape(pg) == before_shape
    assert await leftovers(pg) == (False, 0)


def in_thread(work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` to the end on an event loop of its own (another thread), blocking this
    one: writes that certainly happen between two batches of the copy."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work())  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def test_writes_during_the_copy_are_all_kept(pg: AsyncEngine, pg_url: str) -> None:
    """Between batches: the live writer, a COPY, soft deletes and restores of rows already
    copied and not yet copied, an update and a hard delete; after the swap the table is
    exactly what market_data would have been without the conversion."""
    acknowledged: list[int] = []

    async def write() -> None:
        engine = create_engine(pg_url)
        sessions = create_session_factory(engine)
        try:
            async with MarketDataService(sessions) as service:
                for i in range(5):
                    tick = await service.insert_market_data(
                        {"instrument_id": 2, "timestamp": START + timedelta(hours=i), "price": 7.5}
                    )
                    acknowledged.append(tick.id)
            now = datetime.now(UTC)
            await write_ticks(engine, [(3, now, 1.25, None, None, None, None, None, 5)] * 50)
            async with sessions.begin() as session:
                repository = MarketDataRepository(session)
                for tick_id in (2, ROWS - 2, ROWS - 1):  # copied already, and not yet
                    await repository.soft_delete(tick_id)
                await repository.restore(8)  # soft-deleted by the seed, copied already
                await repository.restore(ROWS - 7)  # and not yet
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE market_data SET price = -1 WHERE id = 3"))
                await connection.execute(text(f"DELETE FROM market_data WHERE id IN (4, {ROWS})"))
        finally:
            await engine.dispose()

    batches = 0

    def between_batches(done: int, total: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            assert 0 < done < total
            in_thread(write)

    report = await partitioning.partition(pg, "1w", batch_size=500, on_progress=between_batches)

    assert report.converted
    assert len(acknowledged) == 5
    async with pg.connect() as connection:
        live = await connection.execute(
            text("SELECT id, price FROM market_data WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": acknowledged},
        )
        assert [tuple(row) for row in live] == [(i, 7.5) for i in acknowledged]
        copied = await connection.scalar(text("SELECT count(*) FROM market_data WHERE volume = 5"))
        assert copied == 50
        deleted = await connection.execute(
            text(
                "SELECT id FROM market_data "
                "WHERE deleted_at IS NOT NULL AND id IN (2, 8, :a, :b, :c)"
            ),
            {"a": ROWS - 2, "b": ROWS - 1, "c": ROWS - 7},
        )
        assert sorted(row[0] for row in deleted) == [2, ROWS - 2, ROWS - 1]
        assert await connection.scalar(text("SELECT price FROM market_data WHERE id = 3")) == -1
        gone = await connection.scalar(
            text(f"SELECT count(*) FROM market_data WHERE id IN (4, {ROWS})")
        )
        assert gone == 0
        total = await connection.scalar(text("SELECT count(*) FROM market_data"))
        assert total == ROWS + 5 + 50 - 2
    assert await leftovers(pg) == (False, 0)


async def test_an_interrupted_conversion_leaves_market_data_whole(
    pg: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, before_shape = await rows(pg), await shape(pg)

    def stop(done: int, total: int) -> None:
        if done >= 2_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await partitioning.partition(pg, "1d", batch_size=1_000, on_progress=stop)
    assert await catalog(pg) == ("r", "PRIMARY KEY (id)", [])
    assert await rows(pg) == before
    assert await shape(pg) == before_shape
    assert await leftovers(pg) == (False, 0)

    # Killed outright: nothing removes what it built; market_data still takes writes.
    async def killed(engine: AsyncEngine) -> bool:
        return False

    monkeypatch.setattr(partitioning, "remove_leftovers", killed)
    with pytest.raises(KeyboardInterrupt):
        await partitioning.partition(pg, "1d", batch_size=1_000, on_progress=stop)
    monkeypatch.undo()
    assert await leftovers(pg) == (True, 3)
    async with create_session_factory(pg).begin() as session:
        session.add(MarketData(instrument_id=1, timestamp=datetime.now(UTC), price=42.0))
        await MarketDataRepository(session).soft_delete(1)
    expected = await rows(pg)
    assert len(expected) == ROWS + 1

    report = await partitioning.partition(pg, "1d", batch_size=1_000)
    assert report.leftovers_removed
    assert report.converted
    assert await rows(pg) == expected
    assert (await catalog(pg))[0] == "p"
    assert await leftovers(pg) == (False, 0)


async def test_writer_copy_and_reads_on_the_partitioned_table(pg: AsyncEngine) -> None:
    """A service started before the conversion keeps writing after it (its pooled
    connections' prepared statements named the old table); COPY and reads work."""
    sessions = create_session_factory(pg)
    now = datetime.now(UTC).replace(microsecond=0)
    async with MarketDataService(sessions) as service:
        before = await service.insert_market_data(
            {"instrument_id": 3, "timestamp": now + timedelta(days=2), "price": 9.5}
        )
        async with sessions() as session:  # a read, prepared on the plain table
            await MarketDataRepository(session).latest()
        await partitioning.partition(pg, "1d", ahead=1)
        tick = await service.insert_market_data(
            {"instrument_id": 1, "timestamp": now, "price": 123.25, "volume": 9}
        )
        # Past every partition: the default partition takes it, the write does not fail.
        stray = await service.insert_market_data(
            {"instrument_id": 1, "timestamp": now + timedelta(days=30), "price": 1.5}
        )
    assert before.id < tick.id < stray.id
    # Tomorrow: past the seeded ticks (every 86.4 s up to midnight), so the minute's bar
    # holds these alone (at `now` one seeded tick of instrument 2 fell in it, 1 run in 4).
    later = now + timedelta(days=1)
    await write_ticks(pg, [(2, later, 55.5, None, None, None, None, None, 3)] * 10)
    async with sessions() as session:
        repository = MarketDataRepository(session)
        latest = {t.instrument_id: (t.id, t.price) for t in await repository.latest()}
        assert latest[1] == (stray.id, 1.5)
        assert latest[3] == (before.id, 9.5)
        page = await repository.range(1, now, now + timedelta(seconds=1))
        assert [(t.id, t.price, t.volume) for t in page.items] == [(tick.id, 123.25, 9)]
        bars = await repository.ohlcv(2, "1m", later, later + timedelta(minutes=1))
        assert [(b.open, b.close, b.volume) for b in bars] == [(55.5, 55.5, 30)]
    async with pg.connect() as connection:
        where = await connection.execute(
            text("SELECT tableoid::regclass::text FROM market_data WHERE id = ANY(:ids)"),
            {"ids": [tick.id, stray.id]},
        )
        assert sorted(name for (name,) in where) == [
            "market_data_default",
            f"market_data_p{now:%Y%m%d}",
        ]


async def test_later_revisions_apply_to_the_partitioned_table(pg: AsyncEngine, pg_url: str) -> None:
    """Down one revision at a time to the baseline and back up: each step applies to the
    partitioned table (index swaps, the DECIMAL round trip, RESTRICT/CASCADE keys,
    deleted_at dropped and added back) and it stays partitioned, every row with it."""
    await partitioning.partition(pg, "1mo")
    before_shape = await shape(pg)
    values = (
        "SELECT id, instrument_id, timestamp, round(price::numeric, 4), round(bid::numeric, 4), "
        "volume FROM market_data ORDER BY id"
    )
    async with pg.connect() as connection:
        before = (await connection.execute(text(values))).all()
    chain = [rev.id for rev in schema.history()]
    for target in reversed(chain[:-1]):
        await asyncio.to_thread(schema.downgrade, pg_url, target, allow_data_loss=True)
        assert (await catalog(pg))[0] == "p", target
        if target == "f79e2702f75c":
            async with pg.connect() as connection:
                names = {
                    name
                    for (name,) in await connection.execute(
                        text("SELECT indexname FROM pg_indexes WHERE tablename = 'market_data'")
                    )
                }
            assert "ix_market_data_instrument_price" in names
            assert "ix_market_data_instrument_timestamp" not in names
            with pytest.raises(MigrationError, match="cannot CREATE INDEX CONCURRENTLY"):
                await asyncio.to_thread(schema.build_indexes_concurrently, pg_url)
    await asyncio.to_thread(schema.upgrade, pg_url, "head")
    assert (await catalog(pg))[0] == "p"
    assert await shape(pg) == before_shape
    async with pg.connect() as connection:
        assert (await connection.execute(text(values))).all() == before
        # The soft-delete downgrade deletes nothing: those rows are visible again.
        hidden = "SELECT count(*) FROM market_data WHERE deleted_at IS NOT NULL"
        assert await connection.scalar(text(hidden)) == 0


async def test_partition_refuses_a_changed_interval_and_sqlite(pg: AsyncEngine) -> None:
    async with pg.begin() as connection:
        await connection.execute(
            text("INSERT INTO market_data (instrument_id, timestamp) VALUES (1, '2010-01-01')")
        )
    before = await rows(pg)
    with pytest.raises(
        MigrationError, match=r"would make 6,[0-9]{3} partitions .* 2010-01-01\), more than 400"
    ):
        await partitioning.partition(pg, "1d")
    assert await catalog(pg) == ("r", "PRIMARY KEY (id)", [])
    assert await rows(pg) == before
    assert await leftovers(pg) == (False, 0)
    async with pg.begin() as connection:
        await connection.execute(text("DELETE FROM market_data WHERE timestamp = '2010-01-01'"))
    await partitioning.partition(pg, "1w", ahead=1)
    again = await partitioning.partition(pg, "1w", ahead=3)
    assert not again.converted
    assert len(again.partitions) == 2
    with pytest.raises(MigrationError, match="already partitioned by 1w"):
        await partitioning.partition(pg, "1d")
    with pytest.raises(ValidationError, match="not understood"):
        await partitioning.partition(pg, "2d")
    sqlite = create_engine("sqlite+aiosqlite://")
    try:
        with pytest.raises(MigrationError, match="is for PostgreSQL"):
            await partitioning.partition(sqlite, "1d")
        with pytest.raises(MigrationError, match="is for PostgreSQL"):
            await partitioning.unpartition(sqlite)
    finally:
        await sqlite.dispose()


_ = Instrument  # the models' mappers are configured through the package import


async def test_strays_in_the_default_partition_are_flagged_and_moved(pg: AsyncEngine) -> None:
    await partitioning.partition(pg, "1d", ahead=1)
    far, early = START + timedelta(days=40, hours=5), START - timedelta(days=3, hours=1)
    async with pg.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price) "
                "VALUES (1, :far, 1), (2, :far, 2), (3, :early, 3)"
            ),
            {"far": far, "early": early},
        )
    before = await rows(pg)
    async with pg.connect() as connection:
        report = await analyze_table(connection, "market_data", latencies={}, plans=[])
    assert report["partitions"] == DAYS + 2  # days, one ahead, the default
    assert report["default_partition_rows"] == 3
    assert report["recommendations"][0].startswith(
        "3 rows of market_data are in market_data_default: no partition covers their time."
    )

    again = await partitioning.partition(pg, "1d", ahead=1)
    assert sorted(again.partitions) == [
        f"market_data_p{early:%Y%m%d}",
        f"market_data_p{far:%Y%m%d}",
    ]
    assert again.default_rows == 0
    assert await rows(pg) == before
    async with pg.connect() as connection:
        report = await analyze_table(connection, "market_data", latencies={}, plans=[])
        where = await connection.execute(
            text(
                "SELECT tableoid::regclass::text, count(*) FROM market_data "
                "WHERE timestamp IN (:far, :early) GROUP BY 1"
            ),
            {"far": far, "early": early},
        )
        assert dict(where.all()) == {
            f"market_data_p{early:%Y%m%d}": 1,
            f"market_data_p{far:%Y%m%d}": 2,
        }
    assert report["default_partition_rows"] == 0
    assert not any("market_data_default" in line for line in report["recommendations"])


def scanned(plan: str) -> set[str]:
    """The partitions a plan reads."""
    return set(re.findall(r" on (market_data_(?:p\d+|default))\b", plan))


async def test_range_and_ohlcv_plans_read_only_their_partitions(pg: AsyncEngine) -> None:
    await partitioning.partition(pg, "1d", ahead=1)
    async with pg.connect() as connection:
        await connection.execute(text("ANALYZE market_data"))
    day2 = START + timedelta(days=2)

    hour = {"a": day2 + timedelta(hours=3), "b": day2 + timedelta(hours=4)}
    async with pg.connect() as connection:
        expected = await connection.scalar(
            text(
                "SELECT count(*) FROM market_data WHERE instrument_id = 2 AND deleted_at IS NULL "
                "AND timestamp >= :a AND timestamp < :b"
            ),
            hour,
        )
    assert expected > 0

    async def reads(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            repository = MarketDataRepository(session)
            page = await repository.range(2, hour["a"], hour["b"])
            assert len(page.items) == expected
            await repository.ohlcv(1, "1h", day2, day2 + timedelta(days=1))
            await repository.ohlcv(1, "1h", day2 + timedelta(hours=23), day2 + timedelta(hours=25))

    one_hour, one_day, two_days = await plans_of(pg, reads)
    assert scanned(one_hour) == {day(2)}, one_hour
    assert scanned(one_day) == {day(2)}, one_day
    assert scanned(two_days) == {day(2), day(3)}, two_days
    assert f"{day(2)}_instrument_id_timestamp_id_idx" in one_hour, one_hour


def day(n: int) -> str:
    return f"market_data_p{START + timedelta(days=n):%Y%m%d}"


async def test_latest_reads_the_last_weeks_partitions_by_backward_probes(pg: AsyncEngine) -> None:
    """The latest tick per instrument has no time range of its own: it probes the last
    week's partitions first (each (instrument_id, timestamp, id) index once per instrument,
    backwards, the row from that probe), and all of them only for an instrument that did not
    trade that week. A lookup of the ids found (the shape before) could not prune: it read
    every partition by id or in full (4.4 s at 3,000,000 rows and 93 partitions)."""
    month_ago = START - timedelta(days=30)
    async with pg.begin() as connection:
        await connection.execute(
            text("INSERT INTO instruments (id, symbol, name) VALUES (4, 'OLD', 'o')")
        )
        await connection.execute(
            text("INSERT INTO market_data (instrument_id, timestamp, price) VALUES (4, :t, 7.5)"),
            {"t": month_ago},
        )
    await partitioning.partition(pg, "1d", ahead=1)
    async with pg.connect() as connection:
        await connection.execute(text("ANALYZE market_data"))
        expected = dict(
            (
                await connection.execute(
                    text(
                        "SELECT DISTINCT ON (instrument_id) instrument_id, id FROM market_data "
                        "WHERE deleted_at IS NULL ORDER BY instrument_id, timestamp DESC, id DESC"
                    )
                )
            ).all()
        )
    assert sorted(expected) == [1, 2, 3, 4]

    async def latest(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            ticks = await MarketDataRepository(session).latest()
        assert {tick.instrument_id: tick.id for tick in ticks} == expected

    every = set((await catalog(pg))[2])
    assert len(every) == 30 + DAYS + 1 + 1
    week_ago = (datetime.now(UTC) - timedelta(days=7)).date()
    last_week = {f"market_data_p{week_ago + timedelta(days=d):%Y%m%d}" for d in range(9)}
    recent, rest = await plans_of(pg, latest)
    assert scanned(recent) == last_week | {"market_data_default"}, recent
    assert scanned(rest) == every, rest  # for OLD alone
    probe = r"Index Scan Backward using market_data_\w+_instrument_id_timestamp_id_idx"
    for plan in (recent, rest):
        for line in plan.splitlines():
            if " on market_data_" in line:
                assert re.search(probe, line), plan
