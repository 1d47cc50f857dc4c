"""A bulk load the database or the input stops part-way, on both engines: it stops at once
with the database's error (not a "refused batch" for every batch after it), and the report
says how many rows are stored, exactly those that are."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import DatabaseError, ValidationError
from tickvault.models import Instrument
from tickvault.services import market_data
from tickvault.services.market_data import IngestReport, MarketDataService
from tickvault.settings import get_settings

T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)
BATCH = 100  # ingest reads its input 100 rows at a time: whole batches keep the steps clear


@pytest.fixture
async def quick_engine(
    head_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncEngine]:
    """An engine whose SQLite busy timeout is 100 ms (a lock held longer is an outage)."""
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "100")
    get_settings.cache_clear()
    engine = create_engine(head_url)
    try:
        async with create_session_factory(engine).begin() as session:
            session.add(Instrument(symbol="AAPL", name="Apple"))
        yield engine
    finally:
        await engine.dispose()
        get_settings.cache_clear()


async def stored(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(sa.text("SELECT count(*) FROM market_data"))).scalar_one()
        )


def feed(
    engine: AsyncEngine, rows: int, stop_at: int, stop: Callable[[], Awaitable[None]]
) -> AsyncIterator[dict[str, Any]]:
    """``rows`` ticks; before tick ``stop_at``, waits until the whole batches before it are
    committed, then calls ``stop``."""

    async def ticks() -> AsyncIterator[dict[str, Any]]:
        for n in range(rows):
            if n == stop_at:
                for _ in range(2_000):  # the writes under way finish (seconds at most)
                    if await stored(engine) == stop_at // BATCH * BATCH:
                        break
                    await asyncio.sleep(0.01)
                await stop()
            yield {"symbol": "AAPL", "timestamp": T0 + timedelta(seconds=n), "price": 1.0 + n}

    return ticks()


async def test_a_load_the_database_stops_says_what_it_stored(
    quick_engine: AsyncEngine, head_url: str
) -> None:
    """SQLite: another process takes the write lock past the busy timeout. PostgreSQL: the
    database turns read-only and its sessions are ended (a fail-over to a standby, say)."""
    holder: list[sqlite3.Connection] = []

    async def stop() -> None:
        if quick_engine.dialect.name == "sqlite":
            holder.append(sqlite3.connect(quick_engine.url.database or "", isolation_level=None))
            holder[0].execute("BEGIN IMMEDIATE")
            return
        name = quick_engine.url.database
        async with quick_engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
            )
            await connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )

    service = MarketDataService(create_session_factory(quick_engine))
    report = IngestReport()
    try:
        with pytest.raises(DatabaseError) as caught:
            await service.ingest(
                feed(quick_engine, 4 * BATCH, 2 * BATCH, stop), batch_size=BATCH, report=report
            )
    finally:
        for connection in holder:
            connection.execute("ROLLBACK")
            connection.close()

    assert str(caught.value).startswith("database ")
    assert (report.accepted, report.failed_batches) == (2 * BATCH, [])
    await quick_engine.dispose()  # PostgreSQL: sessions from before the switch are gone
    assert await stored(quick_engine) == 2 * BATCH


async def load_until_the_input_stops(engine: AsyncEngine) -> IngestReport:
    """A load whose input fails at line 252, two whole batches committed before it."""

    async def stop() -> None:
        raise ValidationError("ticks.csv: not UTF-8 text at or after line 252")

    service = MarketDataService(create_session_factory(engine))
    report = IngestReport()
    with pytest.raises(ValidationError, match="not UTF-8"):
        await service.ingest(
            feed(engine, 4 * BATCH, 2 * BATCH + 50, stop), batch_size=BATCH, report=report
        )
    return report


async def test_a_load_its_input_stops_keeps_the_batches_under_way(
    quick_engine: AsyncEngine,
) -> None:
    report = await load_until_the_input_stops(quick_engine)
    assert report.accepted == 2 * BATCH
    assert await stored(quick_engine) == 2 * BATCH


async def test_a_batch_committed_but_not_yet_counted_when_the_input_stops_is_counted(
    quick_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window the test above hits only by chance, held open: each batch's write returns
    a moment after its commit, so the input fails while the last committed batch is still
    to be counted. The report must count it (cancelled, it said 100 of 200 stored)."""
    write = market_data.write_ticks

    async def slow_to_return(*args: Any, **kwargs: Any) -> None:
        await write(*args, **kwargs)
        await asyncio.sleep(0.5)

    monkeypatch.setattr(market_data, "write_ticks", slow_to_return)
    report = await load_until_the_input_stops(quick_engine)
    assert await stored(quick_engine) == 2 * BATCH
    assert report.accepted == 2 * BATCH
