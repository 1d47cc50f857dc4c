"""Engines and session factories.

Every SQLite connection is set up for safe concurrent use: foreign keys on, WAL for file
databases, ``synchronous=NORMAL``, a busy timeout and a page cache sized for bulk work.
SQLAlchemy emits BEGIN itself on SQLite, so DDL is transactional (a failed migration
leaves nothing behind) — the recipe from SQLAlchemy's SQLite dialect docs.
"""

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from tickvault.database.session import TickvaultSession
from tickvault.database.url import to_async_url
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


def write_session(session_factory: async_sessionmaker[AsyncSession]) -> AsyncSession:
    """A session for a unit of work that reads and then writes.

    On SQLite its transactions start with BEGIN IMMEDIATE, taking the write lock (waiting
    up to the busy timeout) before the first read. A plain BEGIN would start as a reader,
    and a reader whose snapshot another writer has moved past cannot become a writer: SQLite
    answers "database is locked" at once, without waiting. PostgreSQL ignores the option.
    """
    engine: AsyncEngine = session_factory.kw["bind"]
    return session_factory(bind=engine.execution_options(**{WRITE_TRANSACTION: True}))


def _configure_sqlite(
    engine: AsyncEngine, *, is_file: bool, cache_size_mb: int, busy_timeout_ms: int
) -> None:
    pragmas = [
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        # A negative cache_size is in KiB.
        f"PRAGMA cache_size=-{int(cache_size_mb) * 1024}",
    ]
    if is_file:
        pragmas.insert(0, "PRAGMA journal_mode=WAL")

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
