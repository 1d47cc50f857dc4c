"""The live write path: one writer per database coalesces single ticks into group commits.

::

    writer = TickWriter(engine, alerts=AlertService(sessions))
    [outcome] = await writer.write([record])      # Stored(id, alerts) or an exception
    pending = await writer.submit(records)        # queued (waits for room); answered later
    outcomes = await pending
    await writer.aclose()                         # drains and commits what is queued

Producers (the HTTP API, the WebSocket stream, the simulated feed, ``insert_market_data``)
put validated ticks on a bounded queue. The writer takes whatever gathered while its previous
commit ran, evaluates the alert rules of those ticks, and writes the ticks and their alert
logs in one transaction (``tickvault.database.live``); only after COMMIT is each producer
answered. So a tick answered with its id is stored and its alerts evaluated, and a tick
answered with an error is not stored.

On PostgreSQL the writer prepares the next batch while one is being written (``PIPELINE``
batches at once, each on its own connection and in its own one-statement transaction): with
nothing in flight and ``PIPELINE_MIN_TICKS`` or more queued, it takes half of what is queued
and starts the rest behind it, so the database writes one batch while the producers the
other one answered make the next (below that, one batch at a time). A batch's statement is
sent only once the one before it committed, so they commit in the order they were taken;
when one fails, those behind it were not sent: their alert evaluation is undone (newest
first) and they are queued again.

Failures, by what the driver said (``tickvault.database.failures``):

- a tick the database refuses (a constraint, a trigger): the batch is split in halves and
  retried until the refused tick stands alone; it alone is answered ``TickRefused``;
- the database unreachable, starting up or locked past the busy timeout: the batch is
  answered ``DatabaseUnavailable`` and, until a probe (every ``PROBE_SECONDS``) reaches the
  database again, new ticks are refused at once rather than queued;
- a connection lost while the write ran (PostgreSQL): the outcome is unknown, so the writer asks
  the database, once it answers again, whether the batch's ids exist, and answers from that;
- anything else (disk full, ...): ``DatabaseError`` with the driver's reason.

A request may carry a receipt (``RequestReceipt``: an idempotency key and how to render its
response): it is written in the transaction of the request's ticks, and the request is then
all or nothing (isolation never splits it). If its key is already taken in the database,
its ticks are answered ``KeyTaken`` and not stored.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.bulk import TickRecord
from tickvault.database.failures import DRIVER_ERRORS, Failure, kind_of, reason_of
from tickvault.database.live import CommitInDoubt, LiveStore, ReceiptRow, Transaction
from tickvault.errors import (
    ConflictError,
    DatabaseError,
    DatabaseUnavailable,
    TickRefused,
    WriteQueueFull,
)
from tickvault.services.alerts import AlertRun, AlertService

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 50_000  # ticks queued at most
MAX_BATCH = 10_000  # ticks taken into one transaction at most (a larger request goes alone)
PROBE_SECONDS = 0.25  # how often an unreachable database is tried again
PIPELINE = 2  # PostgreSQL: batches in flight at once, each on its own connection
PIPELINE_MIN_TICKS = 256  # ... when this many ticks are queued


class Stored(NamedTuple):  # one per stored tick: cheaper to make than a frozen dataclass
    id: int
    alerts: int  # alert logs this tick caused


class KeyTaken(ConflictError):
    """The request's idempotency key already has a receipt in the database: not stored."""


Outcome = Stored | DatabaseError | TickRefused


@dataclass(frozen=True)
class RequestReceipt:
    """What makes a request idempotent: its key, the hash of the request, where it came
    from, and ``render(ids, alerts)``, its response from its ticks' ids and alert counts."""

    key: str
    fingerprint: str
    source: str
    render: Callable[[list[int], list[int]], str]


@dataclass
class _Request:
    records: Sequence[TickRecord]
    future: "asyncio.Future[list[Outcome]]"
    receipt: RequestReceipt | None = None


# A request's ticks within a batch, and its receipt: (first, count, receipt).
Span = tuple[int, int, RequestReceipt]


class TickWriter:
    """Owns the write queue of one database; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        alerts: AlertService | None = None,
        capacity: int = DEFAULT_CAPACITY,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError("capacity and max_batch must be at least 1")
        self.engine = engine
        self.alerts = alerts
        self._live = LiveStore(engine)
        self.capacity = capacity
        self.max_batch = max_batch
        self._queue: deque[_Request] = deque()
        self._queued = 0  # ticks submitted and not answered yet
        self._backlog = 0  # of which in the queue, not taken into a batch
        self._flights: deque[_Flight] = deque()  # PostgreSQL: batches being written, in order
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closing = False
        self.down: str | None = None  # why the database is unreachable, while it is
        self.committed = 0  # ticks stored since start
        self.batches = 0  # transactions that stored them

    @property
    def queued(self) -> int:
        return self._queued

    async def write(self, records: Sequence[TickRecord]) -> list[Outcome]:
        """Queue ``records`` (waiting for room) and return their outcomes after the commit."""
        return await (await self.submit(records))

    async def submit(
        self,
        records: Sequence[TickRecord],
        *,
        wait: bool = True,
        receipt: RequestReceipt | None = None,
    ) -> "asyncio.Future[list[Outcome]]":
        """Queue ``records``; the future gives one outcome per record, in order.

        A full queue makes this wait, or raise ``WriteQueueFull`` with ``wait=False``. A
        request larger than the queue is taken when the queue is empty. ``receipt`` is
        written with the records (a request with a receipt needs at least one record).
        """
        while True:
            self._refuse_if_closed()
            if not self._queued or self._queued + len(records) <= self.capacity:
                break
            if not wait:
                raise WriteQueueFull(
                    f"the write queue is full ({self._queued:,} ticks waiting): try again shortly"
                )
            self._room.clear()
            await self._room.wait()
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        if not records:
            future.set_result([])
            return future
        self._queue.append(_Request(records, future, receipt))
        self._queued += len(records)
        self._backlog += len(records)
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tickvault-writer")
        return future

    async def aclose(self) -> None:
        """Refuse new ticks, write every queued one, stop."""
        self._closing = True
        self._wakeup.set()
        self._room.set()
        if self._task is not None:
            await self._task
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._live.aclose()

    def _refuse_if_closed(self) -> None:
        if self._closing:
            raise DatabaseUnavailable("the writer is shutting down")
        if self.down is not None:
            raise DatabaseUnavailable(f"database unavailable: {self.down}")

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._flights:
                await self._live.release()  # idle: the pool may have its connections
                if self._queue:
                    continue
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                if self._live.pipelined:
                    await self._pump()
                else:
                    await self._write_alone(self._take(self.max_batch))
            except Exception as exc:  # a bug: answer everyone rather than hang them
                logger.exception("the tick writer failed")
                await self._abandon(exc)
            # A SQLite batch may have been written without yielding once: let the answered
            # producers (and whoever is waiting to queue) run before taking the next one.
            await asyncio.sleep(0)

    def _take(self, limit: int) -> list[_Request]:
        """The oldest requests, up to ``limit`` ticks (the first one whatever its size)."""
        batch = [self._queue.popleft()]
        taken = len(batch[0].records)
        while self._queue and taken + len(self._queue[0].records) <= limit:
            request = self._queue.popleft()
            batch.append(request)
            taken += len(request.records)
        self._backlog -= taken
        return batch

    def _done(self, batch: list[_Request]) -> None:
        self._queued -= sum(len(request.records) for request in batch)
        self._room.set()

    async def _pump(self) -> None:
        """PostgreSQL: keep up to ``PIPELINE`` batches in flight, each sent once the one
        before it committed, and answer the oldest one.

        With at least ``PIPELINE_MIN_TICKS`` queued and nothing in flight, a batch takes
        half of it, so that the rest starts behind it: while the database writes one batch,
        the producers the other one answered make the next. With less queued, one batch at
        a time. When one fails, those behind it (not sent) are queued again and the alert
        state goes back to before the failed one."""
        while self._queue and len(self._flights) < PIPELINE and self.down is None:
            if self._flights and self._backlog < PIPELINE_MIN_TICKS:
                break  # too little queued to be worth a batch of its own
            limit = self.max_batch
            if not self._flights and self._backlog >= PIPELINE_MIN_TICKS:
                limit = min(self.max_batch, -(-self._backlog // 2))
            batch = self._take(limit)
            try:
                flight = await self._begin(batch)
            except DRIVER_ERRORS:
                if self._flights:  # the batches before it first: try it again after them
                    self._requeue([batch])
                    break
                await self._write_alone(batch)  # the serial path says what failed
                return
            except Exception as exc:
                self._give_up(batch, exc)
                raise
            self._flights.append(flight)
        if not self._flights:  # the database is down: answer what is queued
            await self._write_alone(self._take(self.max_batch))
            return
        flight = self._flights.popleft()
        try:
            outcomes = await self._land(flight)
        except Exception as exc:
            self._give_up(flight.batch, exc)
            raise
        self._answer(flight.batch, outcomes)
        self._done(flight.batch)

    async def _write_alone(self, batch: list[_Request]) -> None:
        try:
            await self._write(batch)
        except Exception as exc:
            self._give_up(batch, exc)
            raise
        self._done(batch)

    def _give_up(self, batch: list[_Request], exc: Exception) -> None:
        """After a bug: answer the batch with an error."""
        error = DatabaseError(f"the write failed: {exc!r}")
        self._answer(batch, [error] * sum(len(request.records) for request in batch))
        self._done(batch)

    async def _begin(self, batch: list[_Request]) -> "_Flight":
        records, spans = _flatten(batch)
        run = AlertRun(per_tick=[0] * len(records))
        if self.alerts is not None:
            run = await self.alerts.prepare(records)
        try:
            transaction = await self._live.start(records, run.logs, _receipts(spans, run))
        except BaseException:
            run.undo()
            raise
        return _Flight(batch, records, spans, run, transaction)

    async def _land(self, flight: "_Flight") -> list[Outcome]:
        """Wait for ``flight``, the oldest batch in flight; when it fails, those behind it
        were not sent: undo their alert evaluation and queue them again."""
        try:
            ids = await self._live.finish(flight.transaction)
        except (CommitInDoubt, *DRIVER_ERRORS) as exc:
            failure: BaseException = exc
        else:
            return self._stored(ids, flight.run.per_tick)
        behind = list(self._flights)
        self._flights.clear()
        for later in reversed(behind):  # newest first: each undo restores what it saw
            await self._live.abort(later.transaction)
            later.run.undo()
        self._requeue([later.batch for later in behind])
        if isinstance(failure, CommitInDoubt):
            if await self._committed_after_all(failure.ids[0], reason_of(failure.cause)):
                return self._stored(failure.ids, flight.run.per_tick)
            failure = failure.cause
        flight.run.undo()
        return await self._failed(flight.records, flight.spans, failure)

    def _requeue(self, batches: list[list[_Request]]) -> None:
        for batch in reversed(batches):
            for request in reversed(batch):
                self._queue.appendleft(request)
                self._backlog += len(request.records)

    async def _abandon(self, exc: Exception) -> None:
        """After a bug: answer every batch still in flight, stored or not."""
        flights, self._flights = list(self._flights), deque()
        failed: list[_Flight] = []
        for flight in flights:
            try:
                ids = await self._live.finish(flight.transaction)
            except Exception:
                failed.append(flight)  # and those behind it were not sent
            else:
                self._answer(flight.batch, self._stored(ids, flight.run.per_tick))
                self._done(flight.batch)
        for flight in reversed(failed):
            flight.run.undo()
            self._give_up(flight.batch, exc)

    async def _write(self, batch: list[_Request]) -> None:
        records, spans = _flatten(batch)
        if self.down is not None:
            outcomes: list[Outcome] = [
                DatabaseUnavailable(f"database unavailable: {self.down}")
            ] * len(records)
        else:
            outcomes = await self._store(records, spans)
        self._answer(batch, outcomes)

    @staticmethod
    def _answer(batch: list[_Request], outcomes: list[Outcome]) -> None:
        start = 0
        for request in batch:
            end = start + len(request.records)
            if not request.future.done():  # its producer may have gone away
                request.future.set_result(outcomes[start:end])
            start = end

    async def _store(self, records: list[TickRecord], spans: list[Span]) -> list[Outcome]:
        """Write ``records`` in one transaction; a refused tick (or keyed request) is isolated
        by halving."""
        try:
            ids, per_tick = await self._commit(records, spans)
        except DRIVER_ERRORS as exc:
            return await self._failed(records, spans, exc)
        return self._stored(ids, per_tick)

    def _stored(self, ids: list[int], per_tick: list[int]) -> list[Outcome]:
        self.committed += len(ids)
        self.batches += 1
        return [Stored(id_, alerts) for id_, alerts in zip(ids, per_tick, strict=True)]

    async def _failed(
        self, records: list[TickRecord], spans: list[Span], exc: BaseException
    ) -> list[Outcome]:
        """The outcomes of a batch whose write failed with ``exc`` (nothing of it stored)."""
        kind, reason = kind_of(exc), reason_of(exc)
        if kind is Failure.ROW:
            return await self._isolate(records, spans, reason)
        if kind is Failure.UNAVAILABLE:
            self._went_down(reason)
            return [DatabaseUnavailable(f"database unavailable: {reason}")] * len(records)
        logger.error(
            "the database refused a write of %d ticks: %s", len(records), reason, exc_info=exc
        )
        return [DatabaseError(f"the database refused the write: {reason}")] * len(records)

    async def _isolate(
        self, records: list[TickRecord], spans: list[Span], reason: str
    ) -> list[Outcome]:
        """Halve the batch, never inside a keyed request, until the refused part stands
        alone."""
        keyed = {first: (count, receipt) for first, count, receipt in spans}
        cuts: list[int] = []  # where each unit starts: a lone tick or a keyed request
        index = 0
        while index < len(records):
            cuts.append(index)
            index += keyed[index][0] if index in keyed else 1
        if len(cuts) == 1:
            if not spans:
                return [TickRefused(f"the database refused the tick: {reason}")]
            error: Outcome = (
                KeyTaken(f"idempotency key {spans[0][2].key!r} is taken")
                if "write_receipts" in reason
                else TickRefused(f"the database refused the request's ticks: {reason}")
            )
            return [error] * len(records)
        middle = cuts[len(cuts) // 2]
        head = [span for span in spans if span[0] < middle]
        tail = [(first - middle, count, r) for first, count, r in spans if first >= middle]
        return await self._store(records[:middle], head) + await self._store(records[middle:], tail)

    async def _commit(
        self, records: list[TickRecord], spans: list[Span]
    ) -> tuple[list[int], list[int]]:
        run = AlertRun(per_tick=[0] * len(records))
        try:
            if self.alerts is not None:
                run = await self.alerts.prepare(records)
            ids = await self._live.write(records, run.logs, _receipts(spans, run))
        except CommitInDoubt as doubt:
            if await self._committed_after_all(doubt.ids[0], reason_of(doubt.cause)):
                return doubt.ids, run.per_tick
            run.undo()
            raise doubt.cause from None
        except BaseException:
            run.undo()
            raise
        return ids, run.per_tick

    async def _committed_after_all(self, first_id: int, reason: str) -> bool:
        """After the connection broke while the write ran: did it commit? Asked until the database
        answers (new ticks are refused meanwhile); False if the writer closes first."""
        self.down = reason
        logger.warning("connection lost during a write (%s): waiting to learn the outcome", reason)
        try:
            while not self._closing:
                with contextlib.suppress(Exception):
                    async with self.engine.connect() as connection:
                        found = await connection.scalar(
                            text("SELECT count(*) FROM market_data WHERE id = :id"),
                            {"id": first_id},
                        )
                    logger.warning("the batch in doubt was %scommitted", "" if found else "not ")
                    return bool(found)
                await asyncio.sleep(PROBE_SECONDS)
            return False
        finally:
            self.down = None

    def _went_down(self, reason: str) -> None:
        self.down = reason
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._until_reachable(), name="tickvault-probe")

    async def _until_reachable(self) -> None:
        logger.warning("database unavailable (%s): refusing ticks until it answers", self.down)
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await self._live.probe()
            except Exception as exc:
                self.down = reason_of(exc)
                continue
            self.down = None
            logger.warning("database reachable again: accepting ticks")
            return


@dataclass
class _Flight:
    """A batch being written (PostgreSQL): its requests, ticks, keyed spans, alert run and
    transaction."""

    batch: list[_Request]
    records: list[TickRecord]
    spans: list[Span]
    run: AlertRun
    transaction: Transaction


def _flatten(batch: list[_Request]) -> tuple[list[TickRecord], list[Span]]:
    """The batch's ticks in one list, and where each keyed request's ticks are in it."""
    records = [record for request in batch for record in request.records]
    spans: list[Span] = []
    first = 0
    for request in batch:
        if request.receipt is not None:
            spans.append((first, len(request.records), request.receipt))
        first += len(request.records)
    return records, spans


def _receipts(spans: list[Span], run: AlertRun) -> list[ReceiptRow]:
    return [
        ReceiptRow(
            receipt.key,
            receipt.fingerprint,
            receipt.source,
            first,
            count,
            _renderer(receipt, run.per_tick[first : first + count]),
        )
        for first, count, receipt in spans
    ]


def _renderer(receipt: RequestReceipt, alerts: list[int]) -> Callable[[list[int]], str]:
    return lambda ids: receipt.render(ids, alerts)
