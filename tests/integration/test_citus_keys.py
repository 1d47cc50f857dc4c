"""The Citus step on paper (tickvault.database.citus, docs/scaling.md) against the schema at
head, plain and time-partitioned (PostgreSQL): at head market_data's and alert_logs'
primary keys lack instrument_id, which Citus refuses; after ``KEYS`` every unique key of the
tables to distribute includes it, every foreign key from them points at a reference table,
nothing points at them, and tickvault still writes and reads there."""

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conftest import postgres_admin_url
from tickvault.bench.data import throwaway
from tickvault.database import citus
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services import partitioning, schema
from tickvault.services.market_data import MarketDataService

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway("postgresql", postgres_admin_url()) as url:
        schema.upgrade(url, "head")
        yield url


@pytest.fixture(params=["plain", "partitioned"])
async def layout(
    request: pytest.FixtureRequest, pg_url: str
) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database at head with 100 ticks of 2 instruments over the last 100 hours, plain or
    partitioned by day."""
    engine = create_engine(pg_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO instruments (symbol, name) VALUES ('ES', 'e'), ('NQ', 'n')")
        )
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price) "
                "SELECT 1 + g % 2, CAST(:t AS timestamptz) - make_interval(hours => g), g "
                "FROM generate_series(1, 100) g"
            ),
            {"t": NOW},
        )
    if request.param == "partitioned":
        await partitioning.partition(engine, "1d")
    yield request.param, engine
    await engine.dispose()


async def keys_without_the_distribution_column(connection: AsyncConnection) -> list[str]:
    """Unique indexes (primary keys included) of the tables to distribute that lack
    instrument_id: what create_distributed_table refuses."""
    rows = await connection.execute(
        text(
            "SELECT i.indexrelid::regclass::text FROM pg_index i "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = ANY(:tables) AND i.indisunique AND NOT EXISTS ("
            "  SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid "
            "  AND a.attname = :column AND a.attnum = ANY(i.indkey))"
        ),
        {"tables": list(citus.DISTRIBUTED_TABLES), "column": citus.DISTRIBUTION_COLUMN},
    )
    return sorted(name for (name,) in rows)


async def foreign_keys(connection: AsyncConnection) -> set[tuple[str, str]]:
    """(referencing table, referenced table) for every foreign key touching the tables to
    distribute."""
    rows = await connection.execute(
        text(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND conparentid = 0 AND (conrelid::regclass::text = ANY(:t) "
            "OR confrelid::regclass::text = ANY(:t))"
        ),
        {"t": list(citus.DISTRIBUTED_TABLES)},
    )
    return {(referencing, referenced) for referencing, referenced in rows}


async def test_after_the_key_change_every_unique_key_includes_instrument_id(
    layout: tuple[str, AsyncEngine],
) -> None:
    name, engine = layout
    async with engine.connect() as connection:
        assert await keys_without_the_distribution_column(connection) == [
            "pk_alert_logs",
            "pk_market_data",
        ]

    async with engine.begin() as connection:
        for statement in citus.KEYS[name]:
            await connection.execute(text(statement))

    async with engine.connect() as connection:
        assert await keys_without_the_distribution_column(connection) == []
        assert await foreign_keys(connection) == {
            ("market_data", "instruments"),
            ("alert_logs", "instruments"),
            ("alert_logs", "alert_rules"),
        }
        assert set(citus.REFERENCE_TABLES) >= {"instruments", "alert_rules"}
        key = await connection.scalar(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'pk_market_data' AND conparentid = 0"
            )
        )
        expected = "(id, instrument_id)" if name == "plain" else '(id, instrument_id, "timestamp")'
        assert key == f"PRIMARY KEY {expected}"

    sessions = create_session_factory(engine)
    async with MarketDataService(sessions) as service:
        tick = await service.insert_market_data(
            {"instrument_id": 2, "timestamp": NOW + timedelta(seconds=1), "price": 42.5}
        )
    async with sessions() as session:
        latest = await MarketDataRepository(session).latest()
    assert [(t.instrument_id, t.id, t.price) for t in latest][1] == (2, tick.id, 42.5)
    assert latest[0].timestamp == NOW - timedelta(hours=2)
