"""Engines and session factories.

Every SQLite connection is set up for safe concurrent use: foreign keys on, WAL for file
databases, ``synchronous=NORMAL``, a busy timeout and a page cache sized for bulk work.
SQLAlchemy emits BEGIN itself on SQLite, so DDL is transactional (a failed migration
leaves nothing behind) — the recipe from SQLAlchemy's SQLite dialect docs.
"""

import asyncio
import sqlite3
import urllib.parse
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from tickvault.database.session import TickvaultSession
from tickvault.database.url import display_url, to_async_url
from tickvault.errors import ConfigurationError, DatabaseError
from tickvault.settings import get_settings


def create_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (default: ``TICKVAULT_DATABASE_URL``).

    ``kwargs`` go to SQLAlchemy's ``create_async_engine`` (``echo``, ``poolclass``, …).
    """
    settings = get_settings()
    async_url = to_async_url(url if url is not None else settings.database_url)
    engine = _create_async_engine(async_url, **kwargs)
    if async_url.get_backend_name() == "sqlite":
        _configure_sqlite(
            engine,
            is_file=async_url.database not in (None, "", ":memory:"),
            cache_size_mb=settings.sqlite_cache_size_mb,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        )
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to ``engine`` that keep their objects readable after commit and
    hide soft-deleted rows from every read (see ``tickvault.database.session``)."""
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=TickvaultSession)


WRITE_TRANSACTION = "tickvault_write_transaction"
# One asyncio lock per SQLite database (keyed by its pool), taken around every write
# transaction this process runs on it.
_WRITE_LOCKS: "weakref.WeakKeyDictionary[Any, asyncio.Lock]" = weakref.WeakKeyDictionary()


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that writes, committed when the block ends.

    SQLite has one writer at a time. Left to its busy timeout, concurrent writers poll for
    the lock with growing sleeps: under a few dozen of them the unlucky ones wait past the
    timeout and get "database is locked". So on SQLite this process's writers queue on an
    asyncio lock, in order, and each transaction starts with BEGIN IMMEDIATE (taking the
    write lock before its first read: a deferred transaction whose read snapshot another
    writer has moved past fails at once, without waiting). The busy timeout still covers
    writers in other processes. PostgreSQL needs neither.
    """
    async with (
        write_lock(engine),
        engine.execution_options(**{WRITE_TRANSACTION: True}).begin() as connection,
    ):
        yield connection


@asynccontextmanager
async def write_session(
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that reads and then writes (see ``write_transaction``),
    committed when the block ends, rolled back if it raises."""
    engine: AsyncEngine = session_factory.kw["bind"]
    session = session_factory(bind=engine.execution_options(**{WRITE_TRANSACTION: True}))
    async with write_lock(engine), session, session.begin():
        yield session


def write_lock(engine: AsyncEngine) -> AbstractAsyncContextManager[Any]:
    """This process's queue of writers to ``engine``'s SQLite database (nothing on
    PostgreSQL); see ``write_transaction``."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    pool = engine.sync_engine.pool
    lock = _WRITE_LOCKS.get(pool)
    if lock is None:
        lock = _WRITE_LOCKS[pool] = asyncio.Lock()
    return lock


def _sqlite_pragmas(*, is_file: bool, cache_size_mb: int, busy_timeout_ms: int) -> list[str]:
    pragmas = [
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        # A negative cache_size is in KiB.
        f"PRAGMA cache_size=-{int(cache_size_mb) * 1024}",
    ]
    if is_file:
        pragmas.insert(0, "PRAGMA journal_mode=WAL")
    return pragmas


def sqlite_writer_connection(
    engine: AsyncEngine, *, checkpoints: bool = True
) -> sqlite3.Connection:
    """A plain ``sqlite3`` connection to ``engine``'s database file, set up like the engine's
    own, for a writer that runs whole transactions in one call (one hand-off per
    transaction, or none, instead of several per statement). Transactions are the caller's:
    ``BEGIN IMMEDIATE`` ... ``COMMIT``. ``checkpoints=False``: its commits never checkpoint
    the WAL (someone else must)."""
    database = engine.url.database
    if database in (None, "", ":memory:"):
        raise ConfigurationError(
            "the live tick writer needs a SQLite database file, not an in-memory database"
        )
    settings = get_settings()
    # mode=rw: never create a stray empty file where the database should be.
    connection = sqlite3.connect(
        f"file:{urllib.parse.quote(database)}?mode=rw",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    for pragma in _sqlite_pragmas(
        is_file=True,
        cache_size_mb=settings.sqlite_cache_size_mb,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    ):
        connection.execute(pragma)
    if not checkpoints:
        connection.execute("PRAGMA wal_autocheckpoint=0")
    return connection


def _configure_sqlite(
    engine: AsyncEngine, *, is_file: bool, cache_size_mb: int, busy_timeout_ms: int
) -> None:
    pragmas = _sqlite_pragmas(
        is_file=is_file, cache_size_mb=cache_size_mb, busy_timeout_ms=busy_timeout_ms
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN
        # before DDL); the "begin" hook below emits BEGIN instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_TRANSACTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def check_writable(engine: AsyncEngine) -> None:
    """Raise unless the database takes writes: a driver error on SQLite ("attempt to write a
    readonly database": the file, its folder or the mount is read-only), ``DatabaseError`` on
    a read-only PostgreSQL (a standby, ``default_transaction_read_only``). Writes nothing."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            read_only = await connection.exec_driver_sql("SHOW transaction_read_only")
            if read_only.scalar() == "on":
                raise DatabaseError(
                    f"database {display_url(engine.url)} is read-only (transaction_read_only "
                    "is on: a standby, or default_transaction_read_only)"
                )
        return
    # SQLite opens a file it may not write read-only, and says so only at the first write:
    # write the header's user_version unchanged, then roll back.
    async with (
        write_lock(engine),
        engine.execution_options(**{WRITE_TRANSACTION: True}).connect() as connection,
    ):
        transaction = await connection.begin()
        try:
            version = int((await connection.exec_driver_sql("PRAGMA user_version")).scalar_one())
            await connection.exec_driver_sql(f"PRAGMA user_version = {version}")
        finally:
            await transaction.rollback()
