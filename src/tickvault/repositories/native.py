"""A range of ticks read into Arrow on a connection of its own, outside SQLAlchemy.

PostgreSQL: ``adbc-driver-postgresql`` runs the range as one ``COPY (SELECT …) TO STDOUT
(FORMAT binary)`` and decodes it into Arrow columns in C: no Python object per value.
SQLite: keyset pages, a statement each (``repositories.sqlite_pages``): the first through
the standard library's ``sqlite3``, the library aiosqlite runs on, and the rest of a long
range by ``adbc-driver-sqlite`` in a process of its own. Never that driver in this process:
it links a copy of SQLite of its own, and two copies of SQLite in one process break each
other's file locks (closing its connection released every POSIX lock the process held on
the file, aiosqlite's write lock among them: another process then wrote during that
transaction, and its row was lost; sqlite.org, "How To Corrupt An SQLite Database File",
2.2.1). The same query, rows, order and values as ``MarketDataRepository.range_batches``;
each read opens a connection of its own (outside the caller's transaction), on the engine
the caller's session runs on, so reads routed to the read replica stay there::

    native = await NativeReads.of_session(session)   # None: no driver for this database
    if native is not None:
        async for batch in native.range_batches(1, start, end):   # tick_schema() batches
            ...
"""

import asyncio
import importlib
import urllib.parse
from collections.abc import AsyncGenerator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from time import perf_counter
from types import ModuleType
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tickvault.database.failures import translate
from tickvault.database.url import display_url
from tickvault.errors import DatabaseUnavailable
from tickvault.monitoring import capture
from tickvault.repositories import columns
from tickvault.repositories.market_data import (
    BATCH_ROWS,
    RangeCursor,
    check_batch,
    range_select,
)
from tickvault.repositories.sqlite_pages import BatchRead, SqlitePages

# SQLite's: the standard library's, never a second copy of SQLite (see above).
DRIVERS = {"sqlite": "sqlite3", "postgresql": "adbc_driver_postgresql.dbapi"}
# PostgreSQL's driver cuts COPY's rows into batches by bytes: about this many a tick (11
# columns and their lengths in the binary COPY format), so a batch holds about batch_rows.
COPY_BYTES_PER_ROW = 100
# The query parameters of a PostgreSQL URL that libpq reads as they are; asyncpg's ``ssl``
# is libpq's ``sslmode``. A URL with any other (an asyncpg-only setting) is read through the
# session instead.
LIBPQ_PARAMETERS = frozenset(
    {
        "application_name",
        "connect_timeout",
        "options",
        "passfile",
        "sslcert",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
    }
)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class NativeReads:
    """Reads of the database of ``engine`` outside SQLAlchemy: ``uri`` as its driver takes
    it. What they read is reported to the engine's monitors, as its own statements are."""

    engine: AsyncEngine
    uri: str = field(repr=False)  # it may hold a password

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def where(self) -> str:
        """The database as error messages name it."""
        return display_url(self.engine.url)

    @classmethod
    def of(cls, engine: AsyncEngine) -> "NativeReads | None":
        """The reads of ``engine``'s database, or None when they cannot be made: its driver
        is not installed (PostgreSQL's ADBC driver), or its URL names what a second
        connection cannot reach (an in-memory SQLite database) or says what libpq would not
        understand."""
        url, dialect = engine.url, engine.dialect.name
        if dialect not in DRIVERS or driver(dialect) is None:
            return None
        uri = _sqlite_uri(url) if dialect == "sqlite" else _libpq_uri(url)
        return None if uri is None else cls(engine, uri)

    @classmethod
    async def of_session(cls, session: AsyncSession) -> "NativeReads | None":
        """The reads of the database ``session`` runs on (the read replica's, when the
        session is on it)."""
        return cls.of((await session.connection()).engine)

    async def range_batches(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
        batch_rows: int = BATCH_ROWS,
        long: bool = False,
    ) -> AsyncGenerator[Any, None]:
        """``MarketDataRepository.range_batches``' record batches, read in a worker thread, the
        next batch read while the caller handles this one (memory holds about two
        batches, however long the range). ``long``: the caller expects many batches (an
        export): on SQLite, the reader process starts at once."""
        check_batch(batch_rows)
        range_select(self.dialect, instrument_id, start, end)  # a bad range fails here

        def query(cursor: RangeCursor | None) -> Select[Any]:
            return range_select(
                self.dialect,
                instrument_id,
                start,
                end,
                after=cursor,
                include_deleted=include_deleted,
            )

        def sql_of(cursor: RangeCursor | None, rows: int) -> str:
            return _sql(self.engine.dialect, query(cursor).limit(rows))

        def begin() -> BatchRead:
            if self.dialect == "sqlite":
                return SqlitePages(
                    self.uri, self.where, sql_of, after=after, batch_rows=batch_rows, long=long
                )
            return _CopyRead(self, query(after), batch_rows)

        # Each step in a worker thread, awaited shielded: a cancelled caller leaves it to end
        # in its thread, rather than a task marked done while its thread still reads (what
        # it opened then closed under it).
        starting = asyncio.ensure_future(asyncio.to_thread(begin))
        try:
            read = await asyncio.shield(starting)
        except BaseException:
            starting.add_done_callback(_close_started)
            raise
        pending: asyncio.Future[Any] | None = None
        try:
            pending = asyncio.ensure_future(asyncio.to_thread(read.next_batch))
            while (batch := await asyncio.shield(pending)) is not None:
                pending = asyncio.ensure_future(asyncio.to_thread(read.next_batch))
                self._report(read)
                yield batch
            self._report(read)
        finally:
            _close_when_done(pending, read)

    def _report(self, read: BatchRead) -> None:
        """The statements ``read`` has finished, to the monitors (from the event loop's
        thread, where SQLAlchemy's own statements are reported)."""
        while read.finished:
            statement, started, rows = read.finished.pop(0)
            capture.report(self.engine, statement, started, rows)


def driver(dialect: str) -> ModuleType | None:
    """The DB-API module for ``dialect``, or None when it is not installed."""
    try:
        return importlib.import_module(DRIVERS[dialect])
    except ImportError:
        return None


def _sqlite_uri(url: URL) -> str | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None  # a second connection would open an empty database of its own
    if url.query.get("uri") == "true" and database.startswith("file:"):
        return database
    # Read-only: a read never creates a missing file, nor writes to the database.
    path = urllib.parse.quote(str(Path(database).resolve()))
    return f"file:{path}?mode=ro"


def _libpq_uri(url: URL) -> str | None:
    query = dict(url.query)
    if query.get("ssl") in SSL_MODES and "sslmode" not in query:
        query["sslmode"] = query.pop("ssl")
    if not set(query) <= LIBPQ_PARAMETERS:
        return None
    # libpq waits for a server that does not answer as long as TCP does; asyncpg, 60 s.
    query.setdefault("connect_timeout", "60")
    plain = url.set(drivername="postgresql", query=query)
    return plain.render_as_string(hide_password=False)


def _sql(dialect: Dialect, query: Select[Any]) -> str:
    """``query`` with its values written in: PostgreSQL's driver reads a statement by COPY
    only when it has no parameters. The values are ints and datetimes, rendered by
    SQLAlchemy's literal processors (the same text as bound: UTC, microseconds)."""
    compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return str(compiled)


class _CopyRead(BatchRead):
    """PostgreSQL: the range as one COPY on a connection of its own (called from worker
    threads, one call at a time). ``next_batch()`` gives the next batch of
    ``tick_schema()``, at most ``batch_rows`` rows, or None at the end; ``finished`` holds
    the (SQL, started, rows) of the statement once read, for the monitors."""

    def __init__(self, reads: NativeReads, query: Select[Any], batch_rows: int) -> None:
        self.where, self.batch_rows = reads.where, batch_rows
        dbapi = driver(reads.dialect)
        assert dbapi is not None  # NativeReads.of checked
        self.dbapi: Any = dbapi
        self.pending: Any = None  # a batch the driver gave past batch_rows rows
        self.reader: Any = None
        super().__init__()
        try:
            self.connection: Any = self.dbapi.connect(reads.uri)
        except Exception as exc:
            if not isinstance(exc, self.dbapi.Error):
                raise
            raise DatabaseUnavailable(
                f"database unavailable at {reads.where}: {_first_line(exc)}"
            ) from exc
        try:
            self.cursor: Any = self.connection.cursor()
            hint = batch_rows * COPY_BYTES_PER_ROW
            self.cursor.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(hint)}
            )
            self.statement: tuple[str, float] | None = (
                _sql(reads.engine.dialect, query),
                perf_counter(),
            )
            self.rows = 0  # read by it so far
            self.cursor.execute(self.statement[0])
            self.reader = self.cursor.fetch_record_batch()
        except (OSError, self.dbapi.Error) as exc:
            self.close()
            raise translate(exc, self.where) from exc
        except BaseException:
            self.close()
            raise

    def _read(self) -> Any:
        try:
            batch = self.reader.read_next_batch()
        except StopIteration:
            if self.statement is not None:
                self.finished.append((*self.statement, self.rows))
                self.statement = None
            return None
        except (OSError, self.dbapi.Error) as exc:
            raise translate(exc, self.where) from exc
        self.rows += batch.num_rows
        return batch

    def _next_batch(self) -> Any:
        batch = self.pending if self.pending is not None else self._read()
        self.pending = None
        if batch is None:
            return None
        if batch.num_rows > self.batch_rows:
            batch, self.pending = batch.slice(0, self.batch_rows), batch.slice(self.batch_rows)
        return columns.as_tick_batch(batch)

    def _interrupt(self) -> None:
        cursor = getattr(self, "cursor", None)
        if cursor is not None:
            with suppress(Exception):
                cursor.adbc_cancel()  # the COPY

    def _close(self) -> None:
        for closeable in (self.reader, getattr(self, "cursor", None), self.connection):
            if closeable is not None:
                with suppress(Exception):  # closing what failed: the first error stands
                    closeable.close()


def _close_when_done(pending: "asyncio.Future[Any] | None", read: BatchRead) -> None:
    """Close ``read`` once no worker thread uses it: a read ahead may still be running when
    the caller stops early (it is stopped, and its result or error dropped)."""
    if pending is None or pending.done():
        if pending is not None and not pending.cancelled():
            pending.exception()  # retrieved: no "never retrieved" warning
        read.close()
        return
    read.stop()

    def close(done: "asyncio.Future[Any]") -> None:
        if not done.cancelled():
            done.exception()
        read.close()

    pending.add_done_callback(close)


def _close_started(starting: "asyncio.Future[Any]") -> None:
    """Close a read whose caller was cancelled while it started, once it has."""
    if not starting.cancelled() and starting.exception() is None:
        starting.result().close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
