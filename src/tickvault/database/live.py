"""One transaction of live ticks and their alert logs, on the driver itself.

::

    store = LiveStore(engine)
    ids = await store.write(records, logs)    # ids of the ticks, in input order
    pending = await store.start(records, logs)  # PostgreSQL: sent once the last committed
    ids = await store.finish(pending)         # ... committed (or store.abort(pending))
    await store.aclose()

The live writer commits small batches (a few to a few thousand ticks) as fast as they come,
so what matters is the cost per transaction, and the time the event loop waits for it:

- PostgreSQL: one statement writes a small batch, in its own implicit transaction (one
  round trip): two data-modifying CTEs, each an ``INSERT … SELECT FROM unnest(arrays)``,
  one for the ticks and one for their logs. A batch of ``COPY_MIN_TICKS`` or more (a
  stream's, when the queue is long) is written in a transaction of its own instead: the
  ticks by binary COPY, which costs half the Python of encoding them as arrays (asyncpg
  checks every array element's type), then the logs; a few more round trips, spread over
  hundreds of ticks. ``start`` prepares it on a connection of its own and
  returns; ``finish`` waits for it. The writer may start the next batch while one is being
  written: its statement is sent the moment the one before it committed (by one task that
  sends them all in turn, so no other work of the event loop comes in between), and never
  when that one failed (``NotSent``), so batches commit in the order they were taken while
  Python prepares the next one. The ticks' ids are taken from the sequence ahead of time,
  a block at a time, so they are known before the statement is sent: when the connection
  breaks while a batch may have committed, the outcome is unknown, and ``CommitInDoubt``
  carries the ids to ask the database about later. The writer keeps its connections of
  the engine's pool while it has work.
- SQLite: a ``sqlite3`` connection of the writer's own. A small batch's transaction (BEGIN
  IMMEDIATE, ``executemany`` for ticks and logs, COMMIT) runs right on the event loop: it
  is a few hundred microseconds of in-process work (WAL with ``synchronous=NORMAL`` does
  not wait for the disk at COMMIT), less than one hand-off to a thread and back. It never
  waits there: its busy timeout is 0, and when another process holds the write lock, or
  the batch is large, the transaction runs in a thread of its own with the configured busy
  timeout instead. Its WAL checkpoints run in that thread too, on a connection of their own
  (the writer's connection never checkpoints, so a COMMIT never stalls the loop). It
  queues behind this process's other writers (``write_lock``).

A batch may carry the receipts of idempotent requests (``ReceiptRow``): they are inserted in
the same transaction as the ticks they account for (PostgreSQL: a third CTE), each with the
response of its request, rendered once the ticks' ids are known. A key already taken makes
the whole transaction fail with the driver's unique violation (the writer isolates it).

Both report their statements to any monitor attached to the engine.
"""

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tickvault.database.bulk import SQLITE_INSERT, TICK_COLUMNS, TickRecord, sqlite_timestamp
from tickvault.database.engine import sqlite_writer_connection, write_lock
from tickvault.monitoring.capture import report
from tickvault.settings import get_settings

LOG_COLUMNS = (
    "rule_id", "instrument_id", "timestamp", "trigger_value", "threshold_value",
    "fired_status", "evaluation_time_ms", "message",
)  # fmt: skip


def _unnest(types: Sequence[str], first: int) -> str:
    """``unnest($first::type[], …)``: one array parameter per column."""
    return f"unnest({', '.join(f'${first + i}::{kind}[]' for i, kind in enumerate(types))})"


_TICK_TYPES = ("bigint", "integer", "timestamptz", *["float8"] * 6, "bigint")  # id first
_LOG_TYPES = ("integer", "integer", "timestamptz", "float8", "float8", "varchar", "float8", "text")
_RECEIPT_TYPES = ("varchar", "varchar", "varchar", "bigint", "text")
_INSERT_LOGS = f"INSERT INTO alert_logs ({', '.join(LOG_COLUMNS)}) SELECT * FROM "
_INSERT_RECEIPTS = (
    "INSERT INTO write_receipts "
    "(kind, key, fingerprint, source, rows_consumed, rows_stored, done, response) "
    "SELECT 'request', k, f, s, n, n, true, r FROM "
)
_RECEIPT_NAMES = " AS t(k, f, s, n, r)"
# A small batch: one statement, its own implicit transaction (one round trip).
_PG_WRITE = (
    f"WITH ticks AS (INSERT INTO market_data (id, {', '.join(TICK_COLUMNS)}) "
    f"SELECT * FROM {_unnest(_TICK_TYPES, 1)}), "
    f"logs AS ({_INSERT_LOGS}{_unnest(_LOG_TYPES, 11)}) SELECT 1"
)
_PG_WRITE_KEYED = _PG_WRITE.removesuffix(" SELECT 1") + (
    f", receipts AS ({_INSERT_RECEIPTS}{_unnest(_RECEIPT_TYPES, 19)}{_RECEIPT_NAMES}) SELECT 1"
)
# A large batch: binary COPY of the ticks, then the logs and receipts, in one transaction.
_PG_LOGS = _INSERT_LOGS + _unnest(_LOG_TYPES, 1)
_PG_RECEIPTS = _INSERT_RECEIPTS + _unnest(_RECEIPT_TYPES, 1) + _RECEIPT_NAMES
COPY_MIN_TICKS = 256  # PostgreSQL: batches of this many ticks or more are written by COPY
COPY_COLUMNS = ("id", *TICK_COLUMNS)
_SQLITE_RECEIPTS = (
    "INSERT INTO write_receipts "
    "(kind, key, fingerprint, source, rows_consumed, rows_stored, done, response) "
    "VALUES ('request', ?, ?, ?, ?, ?, 1, ?)"
)
_PG_IDS = "SELECT nextval(pg_get_serial_sequence('market_data', 'id')) FROM generate_series(1, $1)"
ID_BLOCK = 1_000  # ids taken from the sequence at a time (PostgreSQL)
_SQLITE_LOGS = (
    f"INSERT INTO alert_logs ({', '.join(LOG_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in LOG_COLUMNS)})"
)
ON_LOOP_MAX_TICKS = 256  # SQLite: larger batches are written in the writer's thread
# SQLite: a WAL checkpoint after this many ticks or commits, whichever comes first (about
# what SQLite's own 1,000-page autocheckpoint amounts to for ticks and their index entries).
CHECKPOINT_TICKS = 5_000
CHECKPOINT_COMMITS = 200


@dataclass(frozen=True)
class ReceiptRow:
    """The receipt of one idempotent request whose ticks are ``records[first:first+count]``
    of the batch; ``render(ids)`` gives its response once their ids are known."""

    key: str
    fingerprint: str
    source: str
    first: int
    count: int
    render: Callable[[list[int]], str]

    def row(self, ids: Sequence[int]) -> tuple[str, str, str, int, str]:
        mine = list(ids[self.first : self.first + self.count])
        return (self.key, self.fingerprint, self.source, self.count, self.render(mine))


class NotSent(Exception):
    """The batch before this one failed: this one was not sent (nothing of it stored)."""


class CommitInDoubt(Exception):
    """The connection broke while the write ran: it may or may not be stored."""

    def __init__(self, ids: list[int], cause: BaseException) -> None:
        super().__init__(f"connection lost during the write: {cause}")
        self.ids = ids
        self.cause = cause


@dataclass
class Transaction:
    """A batch being written on PostgreSQL (``LiveStore.start``): ``ids`` are its ticks' ids."""

    ids: list[int]
    logs: int
    connection: AsyncConnection
    driver: Any
    sent: "asyncio.Future[float]"  # the write's outcome; its result is when it started


class LiveStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.pipelined = engine.dialect.name == "postgresql"  # transactions may overlap
        self._idle: list[AsyncConnection] = []  # PostgreSQL connections kept while busy
        self._ids: list[int] = []
        self._last: asyncio.Future[float] | None = None  # the write started last, until finished
        self._sends: deque[_Send] = deque()  # PostgreSQL: started, not yet sent, in order
        self._sender: asyncio.Task[None] | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._checkpoint: Future[None] | None = None
        self._commits = 0  # since the last checkpoint (SQLite)
        self._ticks = 0

    async def write(
        self,
        records: Sequence[TickRecord],
        logs: Sequence[Mapping[str, Any]],
        receipts: Sequence[ReceiptRow] = (),
    ) -> list[int]:
        """Store ``records``, ``logs`` (alert_logs rows as dicts) and ``receipts`` in one
        transaction."""
        if self.pipelined:
            return await self.finish(await self.start(records, logs, receipts))
        return await self._write_sqlite(records, logs, receipts)

    async def probe(self) -> None:
        """Raise the driver's error unless a write could start now: on PostgreSQL the server
        answers; on SQLite no other process holds the write lock (a read would succeed
        while it does)."""
        if self.engine.dialect.name == "postgresql":
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
            return
        if self._sqlite is None:
            self._sqlite = sqlite_writer_connection(self.engine, checkpoints=False)
        async with write_lock(self.engine):
            self._sqlite.execute("PRAGMA busy_timeout=0")
            self._sqlite.execute("BEGIN IMMEDIATE")
            self._sqlite.execute("ROLLBACK")

    async def release(self) -> None:
        """Give the pooled connections back (PostgreSQL), while there is nothing to write."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()

    async def aclose(self) -> None:
        await self.release()
        if self._checkpoint is not None:
            await asyncio.wrap_future(self._checkpoint)
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    # PostgreSQL

    async def start(
        self,
        records: Sequence[TickRecord],
        logs: Sequence[Mapping[str, Any]],
        receipts: Sequence[ReceiptRow] = (),
    ) -> Transaction:
        """Start writing ``records``, ``logs`` and ``receipts`` on a connection of their own
        (PostgreSQL) and return at once: ``finish`` waits for the write.

        The statement is sent once the batch started before it committed; if that one
        failed, this one is not sent at all (``finish`` raises ``NotSent``)."""
        connection = self._idle.pop() if self._idle else await self.engine.connect()
        try:
            driver: Any = (await connection.get_raw_connection()).driver_connection
            # Taken here, in the order batches start: each batch's ids follow the last's.
            while len(self._ids) < len(records):
                block = max(ID_BLOCK, len(records) - len(self._ids))
                self._ids += [row[0] for row in await driver.fetch(_PG_IDS, block)]
        except BaseException:
            await connection.invalidate()
            raise
        ids, self._ids = self._ids[: len(records)], self._ids[len(records) :]
        log_columns = _columns(_log_rows(logs), len(LOG_COLUMNS))
        receipt_columns = _columns([r.row(ids) for r in receipts], 5) if receipts else []
        write: Callable[[], Awaitable[object]]
        if len(records) >= COPY_MIN_TICKS:
            rows = [(id_, *record) for id_, record in zip(ids, records, strict=True)]
            write = partial(_pg_copy, driver, rows, log_columns if logs else None, receipt_columns)
        else:
            arguments = [ids, *_columns(records, len(TICK_COLUMNS)), *log_columns]
            statement = _PG_WRITE_KEYED if receipts else _PG_WRITE
            write = partial(driver.execute, statement, *arguments, *receipt_columns)
        # Until the writer has seen how the last batch ended (``finish``, ``abort``), this
        # one waits for it, and is not sent if it failed.
        send = _Send(write, self._last)
        self._sends.append(send)
        self._last = send.outcome
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name="tickvault-sender")
        return Transaction(ids, len(logs), connection, driver, send.outcome)

    async def _send_all(self) -> None:
        """Send the started batches one after the other, each the moment the one before it
        committed: in this task, not in one of its own per batch, so that no other work
        of the event loop comes between one batch's COMMIT and the next one's statement."""
        while self._sends:
            send = self._sends.popleft()
            if send.outcome.done():  # cancelled by whoever waited for it: never sent
                continue
            after = send.after
            if after is not None and (after.cancelled() or after.exception() is not None):
                send.outcome.set_exception(NotSent("the batch before this one failed"))
                continue
            started = perf_counter()
            try:
                await send.write()
            except asyncio.CancelledError:  # the loop is closing: nobody is told anything
                for pending in (send, *self._sends):
                    pending.outcome.cancel()
                raise
            except Exception as exc:
                if not send.outcome.done():
                    send.outcome.set_exception(exc)
                if not send.outcome.cancelled():
                    send.outcome.exception()  # retrieved: whoever waits is told by finish
                continue
            if not send.outcome.done():
                send.outcome.set_result(started)

    async def finish(self, transaction: Transaction) -> list[int]:
        """Wait for the write and return its ids. A connection lost while the batch may have
        committed (its statement sent, no answer) raises ``CommitInDoubt``; a batch not sent
        because the one before it failed, ``NotSent``; any other failure, the driver's error
        (nothing stored)."""
        driver = transaction.driver
        try:
            try:
                started = await transaction.sent
            except NotSent:
                raise  # not sent: whatever its connection's state, nothing is in doubt
            except Exception as exc:
                if driver.is_closed():
                    raise CommitInDoubt(transaction.ids, exc) from exc
                raise
        finally:
            await self._give_back(transaction)
        report(self.engine, "INSERT INTO market_data", started, len(transaction.ids))
        if transaction.logs:
            report(self.engine, "INSERT INTO alert_logs", started, transaction.logs)
        return transaction.ids

    async def abort(self, transaction: Transaction) -> None:
        """Wait for a batch started behind one that failed (it is then not sent) and give
        its connection back."""
        with contextlib.suppress(Exception):
            await transaction.sent
        await self._give_back(transaction)

    async def _give_back(self, transaction: Transaction) -> None:
        if self._last is transaction.sent:
            self._last = None
        connection, driver = transaction.connection, transaction.driver
        if driver.is_closed():
            await connection.invalidate()
        else:
            self._idle.append(connection)

    # SQLite

    async def _write_sqlite(
        self,
        records: Sequence[TickRecord],
        logs: Sequence[Mapping[str, Any]],
        receipts: Sequence[ReceiptRow],
    ) -> list[int]:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="tickvault-writer")
        if self._sqlite is None:
            self._sqlite = sqlite_writer_connection(self.engine, checkpoints=False)
        connection = self._sqlite
        ticks = [(r[0], sqlite_timestamp(r[1]), *r[2:]) for r in records]
        log_rows = [(*row[:2], sqlite_timestamp(row[2]), *row[3:]) for row in _log_rows(logs)]
        async with write_lock(self.engine):
            started = perf_counter()
            ids: list[int] | None = None
            if len(ticks) <= ON_LOOP_MAX_TICKS:
                ids = _sqlite_transaction(connection, ticks, log_rows, receipts, busy_timeout_ms=0)
            if ids is None:
                timeout = get_settings().sqlite_busy_timeout_ms
                ids = await loop.run_in_executor(
                    self._thread,
                    _sqlite_transaction,
                    connection,
                    ticks,
                    log_rows,
                    receipts,
                    timeout,
                )
            if ids is None:
                raise sqlite3.OperationalError("database is locked")  # pragma: no cover
        report(self.engine, "INSERT INTO market_data", started, len(records))
        if logs:
            report(self.engine, "INSERT INTO alert_logs", started, len(logs))
        self._commits += 1
        self._ticks += len(records)
        due = self._commits >= CHECKPOINT_COMMITS or self._ticks >= CHECKPOINT_TICKS
        if due and (self._checkpoint is None or self._checkpoint.done()):
            self._commits = self._ticks = 0
            self._checkpoint = self._thread.submit(_checkpoint, self.engine)
        return ids


def _sqlite_transaction(
    connection: sqlite3.Connection,
    ticks: list[tuple[Any, ...]],
    logs: list[tuple[Any, ...]],
    receipts: Sequence[ReceiptRow],
    busy_timeout_ms: int,
) -> list[int] | None:
    """The whole transaction; None if the write lock was not had within the timeout
    (only when the timeout is 0: with one, "database is locked" is raised as usual)."""
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if busy_timeout_ms == 0 and getattr(exc, "sqlite_errorcode", 0) & 0xFF == 5:  # BUSY
            return None
        raise
    try:
        connection.executemany(SQLITE_INSERT, ticks)
        last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
        # BEGIN IMMEDIATE holds the write lock throughout and an INTEGER PRIMARY KEY takes
        # max(id) + 1: the batch's ids are the last len(ticks), in order.
        ids = list(range(last - len(ticks) + 1, last + 1))
        if logs:
            connection.executemany(_SQLITE_LOGS, logs)
        if receipts:
            rows = [receipt.row(ids) for receipt in receipts]
            connection.executemany(_SQLITE_RECEIPTS, [(*r[:4], r[3], r[4]) for r in rows])
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return ids


@dataclass
class _Send:
    """A started batch (PostgreSQL), waiting for its turn to be sent; ``after``, the outcome
    of the batch started before it, if the writer has not seen that one end yet."""

    write: Callable[[], Awaitable[object]]
    after: "asyncio.Future[float] | None"
    outcome: "asyncio.Future[float]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def _pg_copy(
    driver: Any,
    rows: list[tuple[Any, ...]],
    log_columns: list[list[Any]] | None,
    receipt_columns: list[list[Any]],
) -> None:
    """A large batch in one transaction: its ticks by binary COPY (half the Python of the
    arrays the one-statement write sends), then its logs and receipts. Without either, the
    COPY alone, its own transaction (no BEGIN and COMMIT: each round trip waits for the
    event loop's turn, which a busy stream makes long)."""
    alone = log_columns is None and not receipt_columns
    async with contextlib.nullcontext() if alone else driver.transaction():
        await driver.copy_records_to_table("market_data", records=rows, columns=COPY_COLUMNS)
        if log_columns is not None:
            await driver.execute(_PG_LOGS, *log_columns)
        if receipt_columns:
            await driver.execute(_PG_RECEIPTS, *receipt_columns)


def _checkpoint(engine: AsyncEngine) -> None:
    connection = sqlite_writer_connection(engine)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        connection.close()


def _log_rows(logs: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(log[name] for name in LOG_COLUMNS) for log in logs]


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (asyncpg's arrays for ``unnest``); empty lists for none."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
