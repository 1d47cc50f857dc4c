"""The fastest honest write paths for ticks on each engine.

``write_ticks`` (file loads): one ``COPY`` per batch on PostgreSQL (a single statement: all
of the batch or none of it); on SQLite, inside one transaction per batch, multi-row
``INSERT … VALUES (…), (…)`` statements of as many rows as SQLite binds parameters (3,640
rows of 9 values) for a columnar batch, one ``executemany`` for records.
A batch is either validated records (tuples: asyncpg's ``copy_records_to_table``) or
``TickColumns``, Arrow arrays a columnar load validated in bulk, turned into the driver's
parameters a column at a time (binary COPY built from the columns' buffers), never a
Python dict per row (``tickvault.database.columns``).

The live writer's path is ``tickvault.database.live``.

Both report to any monitor attached to the engine.
"""

import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.columns import TickColumns
from tickvault.database.engine import write_transaction
from tickvault.database.failures import DRIVER_ERRORS, Failure, kind_of, translate
from tickvault.database.url import display_url
from tickvault.monitoring.capture import measured

TICK_COLUMNS = (
    "instrument_id", "timestamp", "price", "bid", "ask",
    "open_price", "high_price", "low_price", "volume",
)  # fmt: skip
# One validated tick, in TICK_COLUMNS order (timestamp aware).
TickRecord = tuple[int, datetime, float | None, float | None, float | None,
                   float | None, float | None, float | None, int | None]  # fmt: skip

SQLITE_INSERT = (
    f"INSERT INTO market_data ({', '.join(TICK_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in TICK_COLUMNS)})"
)


@functools.cache
def sqlite_rows_per_insert() -> int:
    """As many rows as one statement of the SQLite library aiosqlite runs on binds values
    (32,766 values since SQLite 3.32, 999 before; capped there)."""
    with closing(sqlite3.connect(":memory:")) as connection:
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(limit, 32_766) // len(TICK_COLUMNS))


@functools.cache
def sqlite_insert(rows: int) -> str:
    """``INSERT INTO market_data (…) VALUES (?, …), …`` of ``rows`` rows: the statements of
    a load are of two sizes at most, each compiled once (sqlite3's statement cache)."""
    row = f"({', '.join('?' for _ in TICK_COLUMNS)})"
    return f"INSERT INTO market_data ({', '.join(TICK_COLUMNS)}) VALUES " + ", ".join([row] * rows)


def sqlite_timestamp(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores: naive UTC, always with microseconds
    (``2024-01-02 09:30:00.000000``), so that stored values compare as text correctly."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


async def write_ticks(
    engine: AsyncEngine,
    records: Sequence[TickRecord] | TickColumns,
    *,
    before_commit: Callable[[Any], Awaitable[None]] | None = None,
) -> None:
    """Write ``records`` in one atomic step.

    Raises the driver's error when the database refuses a row (a constraint, a value out of
    range: then none of them is stored), and ``DatabaseUnavailable`` or ``DatabaseError``
    when the database itself fails (unreachable, locked, read-only, full): no use going on
    with the next batch then.

    ``before_commit(connection)`` runs in the same transaction once the rows are written
    (a load's receipt moves with its batch): it gets the asyncpg connection on PostgreSQL,
    the SQLAlchemy ``AsyncConnection`` on SQLite; if it raises, nothing is stored.
    """
    try:
        await _write_ticks(engine, records, before_commit)
    except DRIVER_ERRORS as exc:
        if kind_of(exc) is Failure.ROW:
            raise
        raise translate(exc, display_url(engine.url)) from exc


async def _write_ticks(
    engine: AsyncEngine,
    records: Sequence[TickRecord] | TickColumns,
    before_commit: Callable[[Any], Awaitable[None]] | None,
) -> None:
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                async with driver.transaction():
                    async with measured(engine, "COPY market_data", len(records)):
                        copy = None
                        if isinstance(records, TickColumns):
                            copy = records.postgres_copy()
                            if copy is None:
                                records = records.records()
                        if copy is not None:
                            await driver.copy_to_table(
                                "market_data",
                                source=_once(copy),
                                columns=TICK_COLUMNS,
                                format="binary",
                            )
                        else:
                            await driver.copy_records_to_table(
                                "market_data", records=records, columns=TICK_COLUMNS
                            )
                    if before_commit is not None:
                        await before_commit(driver)
            except BaseException:
                # A COPY cut short by a cancel can leave the connection inside a transaction
                # the pool knows nothing of (its next user's writes would vanish with the
                # rollback on return): never hand it back.
                await connection.invalidate()
                raise
        return
    async with write_transaction(engine) as connection:
        if isinstance(records, TickColumns):
            # A few statements of thousands of rows: the raw driver itself runs them 1.4-1.5
            # times as fast as executemany of the same rows (benchmarks/ingest.py --files).
            values, width = records.sqlite_values(), len(TICK_COLUMNS)
            step = sqlite_rows_per_insert() * width
            for start in range(0, len(values), step):
                chunk = values[start : start + step]
                await connection.exec_driver_sql(sqlite_insert(len(chunk) // width), chunk)
        else:
            rows = [(r[0], sqlite_timestamp(r[1]), *r[2:]) for r in records]
            await connection.exec_driver_sql(SQLITE_INSERT, rows)
        if before_commit is not None:
            await before_commit(connection)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
