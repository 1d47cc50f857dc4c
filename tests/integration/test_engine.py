"""Engines and sessions as create_engine / create_session_factory set them up."""

import asyncio

import pytest
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.engine import (
    create_engine,
    create_session_factory,
    write_session,
    write_transaction,
)
from tickvault.models import Instrument
from tickvault.settings import get_settings


@pytest.fixture
def big_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKVAULT_SQLITE_CACHE_SIZE_MB", "16")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_connections_are_set_up_for_safe_concurrent_use(
    database_url: str, big_cache: None
) -> None:
    plain_url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    engine = create_engine(plain_url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                pragmas = {
                    name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in (
                        "foreign_keys",
                        "journal_mode",
                        "synchronous",
                        "busy_timeout",
                        "cache_size",
                    )
                }
                assert pragmas == {
                    "foreign_keys": 1,
                    "journal_mode": "wal",
                    "synchronous": 1,
                    "busy_timeout": 5000,
                    "cache_size": -16 * 1024,
                }
            else:
                # A plain postgresql:// URL: tickvault picks the asyncpg driver and keeps the
                # database the URL names (not the server's default one).
                assert engine.dialect.driver == "asyncpg"
                database = await connection.scalar(text("SELECT current_database()"))
                assert database == make_url(plain_url).database
    finally:
        await engine.dispose()


async def test_an_in_memory_sqlite_database_has_foreign_keys_but_no_wal() -> None:
    engine = create_engine("sqlite:///:memory:")
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "memory"
    finally:
        await engine.dispose()


async def test_ddl_is_transactional(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.begin()
            await connection.execute(text("CREATE TABLE scratch (id INTEGER)"))
            await connection.rollback()
        async with engine.connect() as connection:
            # The CREATE TABLE rolled back with its transaction, on both engines.
            await connection.execute(text("CREATE TABLE scratch (id INTEGER)"))
    finally:
        await engine.dispose()


async def test_objects_stay_readable_after_commit(head_url: str) -> None:
    engine = create_engine(head_url)
    try:
        sessions = create_session_factory(engine)
        async with sessions() as session:
            instrument = Instrument(symbol="ES", name="E-mini S&P 500", asset_class="future")
            session.add(instrument)
            await session.commit()
        assert (instrument.id, instrument.symbol, instrument.currency) == (1, "ES", "USD")
    finally:
        await engine.dispose()


async def _add_instrument(session_factory: async_sessionmaker[AsyncSession], symbol: str) -> None:
    async with session_factory.begin() as session:
        session.add(Instrument(symbol=symbol, name=symbol))


async def test_a_unit_of_work_that_reads_then_writes_survives_another_writer(
    head_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reads, another writer tries to commit, A writes; both land. With a plain BEGIN,
    SQLite fails A at once ("database is locked": its snapshot is stale, once the other
    writer has committed); write_session takes SQLite's write lock at BEGIN, so the other
    writer cannot commit until A has. The other writer here will not wait for the lock (busy
    timeout 0), which shows, without timing anything, that A holds it before its first
    write. PostgreSQL has no such lock: the other writer commits in the middle of A."""
    await _add_instrument(session_factory, "FIRST")
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "0")
    get_settings.cache_clear()
    impatient = create_engine(head_url)  # another engine: not queued behind A in-process
    others = create_session_factory(impatient)
    try:
        async with write_session(session_factory) as session:
            assert await session.scalar(select(func.count()).select_from(Instrument)) == 1
            if impatient.dialect.name == "sqlite":
                with pytest.raises(OperationalError, match="database is locked"):
                    await _add_instrument(others, "OTHER")
            else:
                await _add_instrument(others, "OTHER")  # committed between A's read and write
            session.add(Instrument(symbol="MINE", name="mine"))
        if impatient.dialect.name == "sqlite":
            await _add_instrument(others, "OTHER")  # A has committed: the lock is free
    finally:
        await impatient.dispose()
        get_settings.cache_clear()
    async with session_factory() as check:
        symbols = set(await check.scalars(select(Instrument.symbol)))
    assert symbols == {"FIRST", "OTHER", "MINE"}


async def test_writers_of_one_process_queue_instead_of_timing_out(
    head_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no busy timeout at all, 20 concurrent write transactions would fail with
    "database is locked" on SQLite; write_transaction queues them in the process."""
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "0")
    get_settings.cache_clear()
    engine = create_engine(head_url)
    try:

        async def add(n: int) -> None:
            async with write_transaction(engine) as connection:
                await connection.execute(
                    text("INSERT INTO instruments (symbol, name) VALUES (:s, :s)"), {"s": f"Q{n}"}
                )
                await asyncio.sleep(0.01)  # hold the transaction open a moment

        await asyncio.gather(*(add(n) for n in range(20)))
        async with engine.connect() as connection:
            count = await connection.scalar(text("SELECT count(*) FROM instruments"))
        assert count == 20
    finally:
        await engine.dispose()
        get_settings.cache_clear()
