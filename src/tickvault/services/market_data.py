"""Ingestion: single ticks and validated bulk loads that never half-write a batch.

::

    service = MarketDataService(session_factory)
    tick = await service.insert_market_data({"symbol": "AAPL", "timestamp": now, "price": 189.2})
    live = await service.store(ticks)            # the live writer: group commits
    report = await service.ingest(rows, batch_size=10_000)   # any iterable or async iterable
    report = await service.ingest(open_ticks("ticks.csv"))  # or a pyarrow / pandas / Polars frame
    report.accepted, report.rejected, report.rejections[0].reason
    await service.aclose()                       # commit what is queued, stop the writer

Live ticks go through ``tickvault.services.writer``: each is answered only after its commit.

A file load given a ``source_key`` is exactly-once: each batch moves the load's receipt
(``tickvault.database.receipts``) in the batch's own transaction, so the same load run again
after a crash continues after the last committed row, and a finished one stores nothing
(``force=True`` loads it again)::

    report = await service.ingest(rows, source_key="feed-2024-03-01")
    report.resumed_from, report.already_loaded

A bad row never stops the good ones: it is refused with its position (0-based, in input
order) and reason. Each batch is written atomically (COPY on PostgreSQL, one executemany
transaction on SQLite); a batch the database refuses leaves none of its rows, and the
report lists it. On PostgreSQL two batches are written at once (on two connections), so
they may commit out of order; alert rules still see them in input order. Memory stays flat
whatever the input's length (at most three batches are held).
"""

import asyncio
import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.bulk import TICK_COLUMNS, TickRecord, write_ticks
from tickvault.database.columns import TickColumns
from tickvault.database.receipts import LoadProgress, LoadReceipt, key_fingerprint, open_load
from tickvault.errors import DatabaseError, KeyInFlight, KeyReused, ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.services.alerts import AlertService
from tickvault.services.catalog import InstrumentCatalog
from tickvault.services.readers import TickBatches
from tickvault.services.validation import RowError, TickValidator, unknown_fields
from tickvault.services.writer import KeyTaken, Outcome, RequestReceipt, Stored, TickWriter
from tickvault.settings import get_settings

DEFAULT_BATCH_SIZE = 10_000
MAX_REJECTIONS_KEPT = 10_000
RECENT_KEYS = 10_000  # idempotency keys this process answered, kept to answer a retry at once
CHUNK_ROWS = 100  # rows validated between turns of a pending write
RELEASE_ROWS = 100_000  # rows read from columnar input between Arrow's memory given back
# Batches written at once on PostgreSQL. Two COPYs on two connections doubled nothing on the
# client but let the server use both cores of the development machine: 1.5x the rows/s of
# one (benchmarks/ingest.py; docs/benchmarks.md).
POSTGRES_WRITERS = 2


@dataclass(frozen=True)
class Rejection:
    position: int
    reason: str


@dataclass(frozen=True)
class BatchFailure:
    first_position: int
    last_position: int
    rows: int
    reason: str


@dataclass
class IngestReport:
    accepted: int = 0
    rejected: int = 0
    batches: int = 0
    alerts: int = 0  # alert log rows written (fired, suppressed, cleared)
    rejections: list[Rejection] = field(default_factory=list)  # the first 10,000
    failed_batches: list[BatchFailure] = field(default_factory=list)
    # With a source key: where this run started (rows an earlier run consumed) and whether
    # the load had already finished (then nothing was read or stored).
    resumed_from: int = 0
    already_loaded: bool = False
    receipt: LoadReceipt | None = None  # as it stood when this run started

    @property
    def rows_seen(self) -> int:
        """Rows of the input this run read (after ``resumed_from``)."""
        return self.accepted + self.rejected


@dataclass
class LiveReport:
    """What became of the ticks of one live request."""

    ids: list[int] = field(default_factory=list)  # of the stored ticks, in input order
    alerts: int = 0
    rejections: list[Rejection] = field(default_factory=list)  # in input order
    replayed: bool = False  # the answer of an earlier request with the same idempotency key

    @property
    def accepted(self) -> int:
        return len(self.ids)

    @property
    def rejected(self) -> int:
        return len(self.rejections)


@dataclass(frozen=True)
class IdempotencyKey:
    """A request's idempotency key, and what identifies the request: ``fingerprint`` is a
    hash of it (sha256 of the method, path and body, say); ``source`` says where it came
    from (``POST /market-data``)."""

    key: str
    fingerprint: str
    source: str = ""

    @classmethod
    def of(cls, key: str, source: str, payload: bytes) -> "IdempotencyKey":
        """``key`` for the request ``payload`` (its body) sent to ``source``."""
        digest = hashlib.sha256(source.encode() + b"\n" + payload).hexdigest()
        return cls(key, digest, source)


def _report_json(report: LiveReport) -> str:
    return json.dumps(
        {
            "ids": report.ids,
            "alerts": report.alerts,
            "rejections": [[r.position, r.reason] for r in report.rejections],
        },
        separators=(",", ":"),
    )


def _report_from_json(text: str) -> LiveReport:
    data = json.loads(text)
    return LiveReport(
        ids=data["ids"],
        alerts=data["alerts"],
        rejections=[Rejection(position, reason) for position, reason in data["rejections"]],
        replayed=True,
    )


@dataclass
class PendingReport:
    """Ticks queued for the writer; ``await`` it for their ``LiveReport``."""

    report: LiveReport
    positions: list[int]  # input position of each queued tick
    future: "asyncio.Future[list[Outcome]]"
    response: list[str] = field(default_factory=list)  # a keyed request's, as rendered

    def __await__(self) -> Generator[Any, None, LiveReport]:
        return self._answer().__await__()

    async def _answer(self) -> LiveReport:
        report = self.report
        outcomes = await self.future
        failure: DatabaseError | None = None
        for position, outcome in zip(self.positions, outcomes, strict=True):
            if isinstance(outcome, Stored):
                report.ids.append(outcome.id)
                report.alerts += outcome.alerts
            else:
                report.rejections.append(Rejection(position, str(outcome)))
                if isinstance(outcome, DatabaseError):
                    failure = outcome
        if failure is not None and not report.ids:
            raise failure  # nothing stored: the request failed, it was not "accepted: 0"
        report.rejections.sort(key=lambda rejection: rejection.position)
        return report


@dataclass
class _KeyedReport:
    """A keyed request's ``PendingReport``: ``await`` it for its report, or the first one's
    (``KeyTaken``: committed by another process, or before this one started)."""

    service: "MarketDataService"
    pending: PendingReport
    idempotency: IdempotencyKey

    def __await__(self) -> Generator[Any, None, LiveReport]:
        return self.service._settle(self.pending, self.idempotency).__await__()


class MarketDataService:
    """``alerts``: an ``AlertService`` to run on every stored tick (optional).

    Live ticks (``insert_market_data``, ``submit``, ``store``) go through one ``TickWriter``
    per service: keep one service per database in a process, and ``aclose()`` it (or use
    ``async with``) so that queued ticks are committed before the process exits. File loads
    (``ingest``) take their own path.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        alerts: AlertService | None = None,
        queue_capacity: int | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.alerts = alerts
        engine = session_factory.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("MarketDataService needs a session factory bound to an AsyncEngine")
        self.engine: AsyncEngine = engine
        self.catalog = InstrumentCatalog(engine)
        self._in_flight: set[str] = set()
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()  # key -> (hash, json)
        self.writer = TickWriter(
            engine,
            alerts=alerts,
            capacity=queue_capacity or get_settings().write_queue_ticks,
        )

    async def insert_market_data(self, data: Mapping[str, Any]) -> MarketData:
        """Validate and store one tick; returns it with its id once it is committed.

        The tick goes through the live writer: many producers' ticks share one commit, and
        its alert rules are evaluated in that same transaction.
        """
        try:
            unknown_fields(data)
            record = await self.catalog.validate(data)
        except RowError as exc:
            raise ValidationError(str(exc)) from exc
        [outcome] = await self.writer.write([record])
        if not isinstance(outcome, Stored):
            raise outcome
        return _stored_tick(outcome.id, record)

    async def submit(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        wait: bool = True,
        ignore_unknown_fields: bool = False,
        idempotency: IdempotencyKey | None = None,
    ) -> Awaitable[LiveReport]:
        """Validate ``rows`` and queue the good ones for the live writer; await the result
        for what was stored (ids in input order) and what was refused (position, reason).

        Returns once the rows are queued: a full queue makes this wait, or raise
        ``WriteQueueFull`` with ``wait=False``. The result raises ``DatabaseUnavailable``
        (or ``DatabaseError``) when no row could be stored for that reason. A field a tick
        does not have is refused (a misspelt ``prcie`` would store no price), unless
        ``ignore_unknown_fields`` (a CSV file's other columns).

        With ``idempotency``, the request runs once: its receipt (key, fingerprint, the
        report) is committed in the transaction of its ticks, which are stored all or none,
        and the same key again gets that first report back (``replayed``) with nothing
        stored again; ``KeyReused`` if the fingerprint differs, ``KeyInFlight`` while the
        first is not answered yet. A request that stored no tick leaves no receipt (running
        it again stores nothing either).
        """
        if idempotency is None:
            return await self._queue(rows, wait, ignore_unknown_fields, None)
        key = idempotency.key
        if key in self._in_flight:
            raise KeyInFlight(f"a request with Idempotency-Key {key!r} is still running")
        known = self._recent.get(key)
        if known is not None:
            return _answered(_replay(idempotency, *known))
        self._in_flight.add(key)
        try:
            pending = await self._queue(rows, wait, ignore_unknown_fields, idempotency)
        except BaseException:
            self._in_flight.discard(key)
            raise
        # Settled when the writer answers, whether or not anyone awaits the report.
        pending.future.add_done_callback(
            lambda answer: self._settled(idempotency, pending.response, answer)
        )
        return _KeyedReport(self, pending, idempotency)

    def _settled(
        self,
        idempotency: IdempotencyKey,
        response: list[str],
        answer: "asyncio.Future[list[Outcome]]",
    ) -> None:
        """The writer answered a keyed request: its key is free again, and, if its ticks were
        committed, the response committed with them answers a retry at once."""
        key = idempotency.key
        self._in_flight.discard(key)
        if answer.cancelled() or not any(isinstance(o, Stored) for o in answer.result()):
            return
        self._recent[key] = (idempotency.fingerprint, response[-1])
        if len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)

    async def _queue(
        self,
        rows: Sequence[Mapping[str, Any]],
        wait: bool,
        ignore_unknown_fields: bool,
        idempotency: IdempotencyKey | None,
    ) -> PendingReport:
        validate = await self.catalog.validator()
        report = LiveReport()
        records: list[TickRecord] = []
        positions: list[int] = []
        check_fields = (lambda row: None) if ignore_unknown_fields else unknown_fields
        for position, row in enumerate(rows):
            try:
                check_fields(row)
                records.append(validate(row))
            except RowError:
                try:
                    check_fields(row)
                    records.append(await self.catalog.validate(row))
                except RowError as exc:
                    report.rejections.append(Rejection(position, str(exc)))
                    continue
            positions.append(position)
        receipt = None
        response: list[str] = []
        if idempotency is not None:
            refused = list(report.rejections)

            def render(ids: list[int], alerts: list[int]) -> str:
                answer = LiveReport(ids, sum(alerts), sorted(refused, key=_position))
                rendered = _report_json(answer)
                response.append(rendered)  # the last one is what committed
                return rendered

            receipt = RequestReceipt(
                idempotency.key, idempotency.fingerprint, idempotency.source, render
            )
        future = await self.writer.submit(records, wait=wait, receipt=receipt)
        return PendingReport(report, positions, future, response)

    async def _settle(self, pending: PendingReport, idempotency: IdempotencyKey) -> LiveReport:
        key = idempotency.key
        try:
            return await pending
        except KeyTaken:
            # Committed by another process, or before this one started.
            stored = await self._stored_receipt(key)
            if stored is None:
                raise KeyInFlight(
                    f"a request with Idempotency-Key {key!r} is still running"
                ) from None
            return _replay(idempotency, *stored)

    async def store(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        wait: bool = True,
        ignore_unknown_fields: bool = False,
        idempotency: IdempotencyKey | None = None,
    ) -> "LiveReport":
        """``submit`` and wait for the result."""
        return await (
            await self.submit(
                rows,
                wait=wait,
                ignore_unknown_fields=ignore_unknown_fields,
                idempotency=idempotency,
            )
        )

    async def _stored_receipt(self, key: str) -> tuple[str, str] | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT fingerprint, response FROM write_receipts "
                        "WHERE kind = 'request' AND key = :key"
                    ),
                    {"key": key},
                )
            ).first()
        return None if row is None else (row[0], row[1])

    def reload_catalog(self) -> None:
        """Reload the cached instruments and alert rules before the next live tick (call
        after changing either in this process; other processes' changes are seen within
        two seconds)."""
        self.catalog.invalidate()
        if self.alerts is not None:
            self.alerts.invalidate()

    async def aclose(self) -> None:
        """Write every queued tick and stop the writer."""
        await self.writer.aclose()
        await self.catalog.aclose()
        if self.alerts is not None:
            await self.alerts.aclose()

    async def __aenter__(self) -> "MarketDataService":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ingest(
        self,
        rows: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]] | Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_reject: Callable[[Rejection, Mapping[str, Any]], None] | None = None,
        on_failed_batch: Callable[[BatchFailure], None] | None = None,
        source_key: str | None = None,
        source_name: str | None = None,
        fingerprint: str | None = None,
        force: bool = False,
        report: IngestReport | None = None,
        on_receipt: Callable[[LoadReceipt], None] | None = None,
    ) -> IngestReport:
        """Validate and store ``rows`` in batches of ``batch_size``.

        ``rows``: mappings (any iterable or async iterable), or columns: ``open_ticks(path)``
        (a CSV or Parquet file as Arrow record batches), a pyarrow Table, RecordBatch or
        RecordBatchReader, a pandas or Polars DataFrame (columns named as a file's, others
        ignored). Columns are validated a batch at a time by vectorized checks with the
        same rules; a batch holding a refused row is taken row by row, so reasons and
        positions are those of the row path.

        ``on_reject(rejection, row)`` sees every refused row (the report keeps the first
        10,000), to write a rejects file, say; ``on_failed_batch`` every batch the database
        refused. Both are called before any later batch commits.

        ``source_key`` (up to 255 characters; the CLI uses the file's sha256) makes the load
        exactly-once: ``rows`` must then be the whole input, from its first row, on every
        run; the rows an earlier run of the same key committed are skipped (positions stay
        those of the whole input), a finished load reads nothing (``already_loaded``), and
        ``force`` starts it again. A second load of the same key running at the same time
        stops with ``LoadInProgress``. ``source_name`` and ``fingerprint`` are kept on the
        receipt; ``on_receipt`` sees it as it stood, before any row is read. Pass ``report``
        to read what was stored when the load raises.
        """
        if not 1 <= batch_size <= 1_000_000:
            raise ValidationError(f"batch_size must be between 1 and 1,000,000, got {batch_size}")
        report = report if report is not None else IngestReport()
        progress: LoadProgress | None = None
        if source_key is not None:
            if not 0 < len(source_key) <= 255:
                raise ValidationError("source_key must be 1 to 255 characters")
            receipt = await open_load(
                self.engine,
                source_key,
                fingerprint=fingerprint or key_fingerprint(source_key),
                source=source_name,
                force=force,
            )
            report.receipt = receipt
            if on_receipt is not None:
                on_receipt(receipt)
            if receipt.done:
                report.already_loaded = True
                return report
            report.resumed_from = receipt.rows_consumed
            progress = LoadProgress(source_key, receipt.rows_consumed)
        async with self.session_factory() as session:
            validate = await self._validator(session)
        columnar = _columnar(rows)
        check: Callable[[Any], TickColumns | None] = lambda piece: None  # noqa: E731
        if columnar is not None:
            from tickvault.services.columnar import ColumnChecker

            check = ColumnChecker(validate.instruments, validate.symbols)
            pieces = _pieces(columnar, batch_size, report.resumed_from)
        else:
            pieces = _chunks(_skip(rows, report.resumed_from), CHUNK_ROWS)
        batch: list[TickRecord] = []
        first_position = 0
        position = report.resumed_from - 1
        # Batches are written while the next is validated: the driver works (SQLite in
        # aiosqlite's thread, PostgreSQL on the server) while Python checks rows. PostgreSQL
        # takes two batches at once on two connections, one server process each; SQLite has
        # one writer, so one at a time there. Each batch stays all-or-nothing, and alert
        # rules see the batches in input order (each write waits for the one before).
        writers = POSTGRES_WRITERS if self.engine.dialect.name == "postgresql" else 1
        pending: list[asyncio.Task[None]] = []

        async def start_write(batch: list[TickRecord] | TickColumns, first: int, last: int) -> None:
            if isinstance(batch, TickColumns):
                # The driver's parameters, made while the batch before is still written.
                batch.prepare(self.engine.dialect.name)
            if len(pending) >= writers:
                await pending.pop(0)
            previous = pending[-1] if pending else None
            write = self._write(report, batch, first, last, previous, progress, on_failed_batch)
            pending.append(asyncio.create_task(write))
            await asyncio.sleep(0)  # let the write start before validating on

        try:
            # Rows come in chunks: the per-row loop is plain synchronous code, whether the
            # input is an iterable or an async iterable. Columnar input comes in record
            # batches of batch_size rows, each written whole when every row passes.
            async for chunk in pieces:
                if pending:
                    # Give the pending writes their turn: each of their steps (BEGIN, the
                    # executemany or COPY, COMMIT) needs the event loop to move on.
                    await asyncio.sleep(0)
                if not isinstance(chunk, list):
                    columns = check(chunk)
                    if columns is not None:
                        if batch:  # rows before it, in input order
                            await start_write(batch, first_position, position)
                            batch = []
                        await start_write(columns, position + 1, position + len(columns))
                        position += len(columns)
                        continue
                    chunk = _rows_of(chunk)
                for row in chunk:
                    position += 1
                    try:
                        batch.append(validate(row))
                    except RowError as exc:
                        rejection = Rejection(position, str(exc))
                        self._reject(report, rejection)
                        if on_reject is not None:
                            on_reject(rejection, row)
                        continue
                    if len(batch) == 1:
                        first_position = position
                    if len(batch) >= batch_size:
                        await start_write(batch, first_position, position)
                        batch = []
            if batch:
                await start_write(batch, first_position, position)
            while pending:
                await pending.pop(0)
            if progress is not None:
                # Rows refused after the last batch are consumed too.
                await progress.finish(self.engine, max(position + 1, progress.consumed))
        except Exception:
            # The input (or a write) failed: the batches under way finish and are counted,
            # so the report says every row they committed.
            for task in pending:
                with contextlib.suppress(Exception):
                    await task
            raise
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return report

    async def _validator(self, session: AsyncSession) -> TickValidator:
        rows = (
            await session.execute(select(Instrument.id, Instrument.symbol, Instrument.is_active))
        ).all()
        return TickValidator(
            instruments={id_: active for id_, _, active in rows},
            symbols={symbol: id_ for id_, symbol, _ in rows},
        )

    async def _write(
        self,
        report: IngestReport,
        batch: list[TickRecord] | TickColumns,
        first: int,
        last: int,
        previous: "asyncio.Task[None] | None",
        progress: LoadProgress | None = None,
        on_failed_batch: Callable[[BatchFailure], None] | None = None,
    ) -> None:
        report.batches += 1

        async def account(connection: Any) -> None:
            # Commits in input order (on PostgreSQL the COPYs ran side by side), each
            # moving the receipt from where the batch before left it.
            if previous is not None:
                await previous
            if progress is None:
                return
            if isinstance(connection, AsyncConnection):
                await progress.advance_sqlite(connection, last + 1, len(batch))
            else:
                await progress.advance_asyncpg(self.engine, connection, last + 1, len(batch))

        if previous is not None and self.engine.dialect.name == "sqlite":
            # One writer at a time there: the batch before (its alert logs included, which
            # take the write lock too) finishes before this one takes the lock.
            await previous
        try:
            await write_ticks(self.engine, batch, before_commit=account)
        except (DBAPIError, asyncpg.PostgresError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            failure = BatchFailure(first, last, len(batch), reason)
            if previous is not None:
                await previous  # failures listed in input order too
            report.failed_batches.append(failure)
            report.rejected += len(batch)
            if on_failed_batch is not None:
                on_failed_batch(failure)
            return
        if previous is not None:
            await previous
        report.accepted += len(batch)
        if self.alerts is not None:
            records = batch.records() if isinstance(batch, TickColumns) else batch
            report.alerts += await self.alerts.evaluate(sorted(records, key=_timestamp_of))

    @staticmethod
    def _reject(report: IngestReport, rejection: Rejection) -> None:
        report.rejected += 1
        if len(report.rejections) < MAX_REJECTIONS_KEPT:
            report.rejections.append(rejection)


_NEW_TICK = MarketData.__mapper__.class_manager.new_instance


def _stored_tick(id_: int, record: TickRecord) -> MarketData:
    """A ``MarketData`` holding what was stored, as a detached object.

    Built as the ORM builds the objects it loads (an instance whose values are set, not
    assigned): 1.6 instead of 23 microseconds, which counts at thousands of ticks a second.
    """
    tick: MarketData = _NEW_TICK()
    tick.__dict__.update(zip(TICK_COLUMNS, record, strict=True))
    tick.__dict__["id"] = id_
    return tick


def _replay(idempotency: IdempotencyKey, fingerprint: str, response: str) -> LiveReport:
    if fingerprint != idempotency.fingerprint:
        raise KeyReused(
            f"Idempotency-Key {idempotency.key!r} was used for a different request: "
            "nothing stored (use a new key for a new request)"
        )
    return _report_from_json(response)


def _answered(report: LiveReport) -> "asyncio.Future[LiveReport]":
    future: asyncio.Future[LiveReport] = asyncio.get_running_loop().create_future()
    future.set_result(report)
    return future


def _position(rejection: Rejection) -> int:
    return rejection.position


def _timestamp_of(record: TickRecord) -> datetime:
    return record[1]


def _columnar(rows: Any) -> TickBatches | None:
    """Columnar input as record batches, or None for rows."""
    if isinstance(rows, TickBatches):
        return rows
    if type(rows).__module__.partition(".")[0] in ("pyarrow", "pandas", "polars"):
        from tickvault.services.tick_batches import frame_batches

        return frame_batches(rows)
    return None


async def _pieces(source: TickBatches, size: int, skip: int) -> AsyncIterator[Any]:
    """``source`` without its first ``skip`` rows: record batches of ``size`` rows (the
    last of a run smaller), and its lists of rows in chunks of ``CHUNK_ROWS``."""
    import pyarrow as pa

    held: list[Any] = []  # record batches not yet passed on
    count = read = 0
    for item in source:
        if isinstance(item, list):
            length = len(item)  # rows of the row reader (where Arrow could not read)
        else:
            length = item.num_rows
            read += length
        if read >= RELEASE_ROWS:
            # Arrow's default pool (mimalloc) keeps what the batches before freed resident:
            # handed back, a long load's peak RSS is lower (docs/benchmarks.md's ingest).
            pa.default_memory_pool().release_unused()
            read = 0
        if skip >= length:
            skip -= length
            continue
        if isinstance(item, list):
            if held:
                yield _joined(pa, held)
                held, count = [], 0
            rows = item[skip:]
            skip = 0
            for start in range(0, len(rows), CHUNK_ROWS):
                yield rows[start : start + CHUNK_ROWS]
            continue
        if skip:
            item, skip = item.slice(skip), 0
        held.append(item)
        count += item.num_rows
        while count >= size:
            joined = _joined(pa, held)
            yield joined.slice(0, size)
            rest = joined.slice(size)
            held, count = ([rest] if rest.num_rows else []), rest.num_rows
    if held:
        yield _joined(pa, held)


def _joined(pa: Any, batches: list[Any]) -> Any:
    if len(batches) == 1:
        return batches[0]
    # From malloc, as the CSV reader's memory (tick_batches.CSV_MEMORY): Arrow's default
    # pool kept more of it resident.
    table = pa.Table.from_batches(batches).combine_chunks(pa.system_memory_pool())
    [batch] = table.to_batches()
    return batch


def _rows_of(batch: Any) -> list[dict[str, Any]]:
    """A record batch as the rows a row reader would give."""
    try:
        rows: list[dict[str, Any]] = batch.to_pylist()
    except (ValueError, OverflowError) as exc:  # a date Python cannot hold, say
        raise ValidationError(f"values Python cannot read ({exc})") from exc
    return rows


def _skip(
    rows: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]], count: int
) -> Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]]:
    """``rows`` without the first ``count``."""
    if count == 0:
        return rows
    if isinstance(rows, AsyncIterable):

        async def skipped(source: AsyncIterable[Mapping[str, Any]]) -> AsyncIterator[Any]:
            seen = 0
            async for row in source:
                if seen >= count:
                    yield row
                seen += 1

        return skipped(rows)
    return islice(rows, count, None)


async def _chunks(
    rows: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]], size: int
) -> AsyncIterator[list[Mapping[str, Any]]]:
    """``rows`` in lists of up to ``size``, from an iterable or an async iterable."""
    if isinstance(rows, AsyncIterable):
        chunk: list[Mapping[str, Any]] = []
        async for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk
