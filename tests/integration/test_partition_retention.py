"""Retention by partition on PostgreSQL: `purge` detaches and drops every partition wholly
past the cutoff with its row count as the statistics have it (counted on a dry run),
removes soft-deleted rows of the others (the default partition included) row by row, lists
the same on a dry run, asks first, and finishes a purge stopped between its detach and its
drop."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import postgres_admin_url
from tickvault.bench.data import throwaway
from tickvault.database import partitions as parts
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.types import utcnow
from tickvault.errors import ConfirmationRequired
from tickvault.services import partitioning, schema
from tickvault.services.purge import DroppedPartition, purge_soft_deleted

DAYS = 10
PER_DAY = 480  # one every 180 s
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=DAYS - 1
)
CUTOFF = START + timedelta(days=4, hours=12)  # days 0-3 wholly before it, day 4 partly
LONG_AGO = START - timedelta(days=30)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway("postgresql", postgres_admin_url()) as url:
        schema.upgrade(url, "head")
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    await seed(engine)
    await partitioning.partition(engine, "1d", ahead=1)
    async with engine.begin() as connection:
        # Strays before every partition land in the default one: 2 live, 1 soft-deleted.
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price, deleted_at) "
                "VALUES (1, :t, 1, NULL), (2, :t, 2, NULL), (1, :t, 3, :t)"
            ),
            {"t": LONG_AGO},
        )
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine) -> None:
    """PER_DAY ticks a day for DAYS days; every 9th soft-deleted long ago, every 10th just
    now (too recent to purge)."""
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO instruments (symbol, name) VALUES ('ES', 'e'), ('NQ', 'n')")
        )
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price, deleted_at) "
                "SELECT 1 + g % 2, CAST(:start AS timestamptz) + make_interval(secs => g * :step),"
                " g, CASE WHEN g % 9 = 0 THEN CAST(:old AS timestamptz) "
                "WHEN g % 10 = 0 THEN now() END FROM generate_series(0, :n - 1) g"
            ),
            {"start": START, "step": 86_400 // PER_DAY, "n": DAYS * PER_DAY, "old": LONG_AGO},
        )


def older_than() -> timedelta:
    return utcnow() - CUTOFF


async def ids(engine: AsyncEngine, where: str = "true") -> set[int]:
    async with engine.connect() as connection:
        return set(
            (await connection.execute(text(f"SELECT id FROM market_data WHERE {where}"))).scalars()
        )


def day_start(n: int) -> datetime:
    return START + timedelta(days=n)


def day(n: int) -> str:
    return f"market_data_p{START + timedelta(days=n):%Y%m%d}"


async def test_purge_drops_expired_partitions_and_old_soft_deleted_rows(pg: AsyncEngine) -> None:
    sessions = create_session_factory(pg)
    before = await ids(pg)
    in_expired = await ids(
        pg, f"timestamp >= '{START.isoformat()}' AND timestamp < '{day_start(4).isoformat()}'"
    )
    soft_old = await ids(pg, f"deleted_at < '{CUTOFF.isoformat()}'") - in_expired
    assert len(in_expired) == 4 * PER_DAY
    assert len(soft_old) == 1 + len([g for g in range(4 * PER_DAY, DAYS * PER_DAY) if g % 9 == 0])
    expected_dropped = [
        DroppedPartition(day(n), START + timedelta(days=n), START + timedelta(days=n + 1), PER_DAY)
        for n in range(4)
    ]

    dry = await purge_soft_deleted(sessions, older_than=older_than(), dry_run=True)
    assert dry.dropped == expected_dropped
    assert dry.deleted["market_data"] == len(soft_old)
    assert await ids(pg) == before

    with pytest.raises(ConfirmationRequired, match=f"market_data partitions: {4 * PER_DAY:,}"):
        await purge_soft_deleted(sessions, older_than=older_than(), confirm_above=4 * PER_DAY)
    assert await ids(pg) == before

    done = await purge_soft_deleted(sessions, older_than=older_than(), batch_size=100)
    # The partitions' statistics are the conversion's ANALYZE: each day's rows, read whole.
    assert done.dropped == [replace(p, estimated=True) for p in expected_dropped]
    assert done.deleted["market_data"] == len(soft_old)
    assert await ids(pg) == before - in_expired - soft_old
    async with pg.begin() as connection:
        layout = await parts.read_layout(connection)
        leftover = await connection.scalar(text(f"SELECT to_regclass('{day(0)}')"))
    assert layout is not None
    assert [p.name for p in layout.partitions][:2] == [day(4), day(5)]
    assert leftover is None
    # Nothing more is due: the partly covered day 4 stays, so do the two live strays.
    again = await purge_soft_deleted(sessions, older_than=older_than())
    assert (again.dropped, again.deleted["market_data"]) == ([], 0)
    assert len(await ids(pg, f"timestamp = '{LONG_AGO.isoformat()}'")) == 2


async def test_a_purge_reports_the_statistics_and_counts_a_partition_never_analyzed(
    pg: AsyncEngine,
) -> None:
    """The rows a purge reports are the statistics' (stale once rows went since the last
    ANALYZE), counted for a partition never analyzed."""
    earlier = START - timedelta(days=2)  # before every partition: no stray is that day
    name = f"market_data_p{earlier:%Y%m%d}"
    async with pg.begin() as connection:
        await connection.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF market_data FOR VALUES "
                f"FROM ('{earlier.isoformat()}') TO ('{(earlier + timedelta(days=1)).isoformat()}')"
            )
        )
        await connection.execute(
            text("INSERT INTO market_data (instrument_id, timestamp, price) VALUES (1, :t, 1)"),
            [{"t": earlier + timedelta(minutes=n)} for n in range(5)],
        )
        await connection.execute(text(f"DELETE FROM {day(0)} WHERE price < 100"))
    cutoff = utcnow() - (START + timedelta(days=1))
    done = await purge_soft_deleted(create_session_factory(pg), older_than=cutoff)
    assert [(p.name, p.rows, p.estimated) for p in done.dropped] == [
        (name, 5, False),
        (day(0), PER_DAY, True),
    ]
    assert await ids(pg, f"timestamp < '{day_start(1).isoformat()}'") == await ids(
        pg, f"timestamp = '{LONG_AGO.isoformat()}'"
    )


async def test_keep_partitions_and_a_purge_stopped_after_its_detach(pg: AsyncEngine) -> None:
    sessions = create_session_factory(pg)
    kept = await purge_soft_deleted(sessions, older_than=older_than(), drop_partitions=False)
    assert kept.dropped == []
    assert kept.deleted["market_data"] == 1 + len([g for g in range(DAYS * PER_DAY) if g % 9 == 0])

    # A purge stopped between detaching day 0 and dropping it.
    async with pg.begin() as connection:
        layout = await parts.read_layout(connection)
        assert layout is not None
        await parts.detach(connection, layout.partitions[:1])
    rows_left = PER_DAY - len([g for g in range(PER_DAY) if g % 9 == 0])
    listed = await purge_soft_deleted(sessions, older_than=timedelta(days=3650), dry_run=True)
    assert listed.dropped == [DroppedPartition(day(0), START, START + timedelta(days=1), rows_left)]
    done = await purge_soft_deleted(sessions, older_than=timedelta(days=3650))
    assert done.dropped == listed.dropped
    async with pg.connect() as connection:
        assert await connection.scalar(text(f"SELECT to_regclass('{day(0)}')")) is None
