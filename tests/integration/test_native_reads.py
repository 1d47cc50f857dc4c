"""Ticks read through ADBC (what `tickvault export` and the API's Arrow and Parquet answers
use), on both engines: the same rows as the JSON range, value for value and in order,
soft-deleted ticks only when asked, whatever the batch size, the time zone of the bounds,
or a column that holds NULLs alone in one batch and numbers in the next."""

import asyncio
import os
import subprocess
import sys
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_arrow_reads import END, START, T0, Sessions, _json_range, _load
from tickvault.errors import DatabaseError, TickvaultError, ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.repositories import columns, sqlite_pages
from tickvault.repositories.native import NativeReads
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.export import export_range


async def _native(sessions: Sessions) -> NativeReads:
    async with sessions() as session:
        native = await NativeReads.of_session(session)
    assert native is not None, "the ADBC drivers come with the arrow extra (make setup)"
    return native


async def _batches(native: NativeReads, *args: Any, **kwargs: Any) -> list[Any]:
    return [batch async for batch in native.range_batches(*args, **kwargs)]


def _rows(batches: list[Any]) -> list[dict[str, Any]]:
    return pa.Table.from_batches(batches, schema=columns.tick_schema()).to_pylist()


@pytest.mark.parametrize("batch_rows", [2, 65_536])
async def test_native_batches_are_the_json_range(
    session_factory: Sessions, batch_rows: int
) -> None:
    ids = await _load(session_factory)
    native = await _native(session_factory)
    expected = await _json_range(session_factory)
    batches = await _batches(native, 1, START, END, batch_rows=batch_rows)
    assert all(batch.schema.equals(columns.tick_schema()) for batch in batches)
    assert all(batch.num_rows <= batch_rows for batch in batches)
    assert _rows(batches) == expected
    assert ids[5] not in [row["id"] for row in _rows(batches)]  # soft-deleted
    every = await _batches(native, 1, START, END, include_deleted=True, batch_rows=batch_rows)
    assert _rows(every) == await _json_range(session_factory, include_deleted=True)
    cursor = (expected[3]["timestamp"], expected[3]["id"])  # inside the 3 ticks at T0 + 1.5 s
    rest = await _batches(native, 1, START, END, after=cursor, batch_rows=batch_rows)
    assert _rows(rest) == expected[4:]


async def test_a_column_of_nulls_in_one_batch_and_numbers_in_the_next(
    session_factory: Sessions,
) -> None:
    """SQLite's driver infers a column's type from the values of its first batch: a column of
    NULLs alone comes as int64, and a statement whose next batch holds doubles would fail."""
    async with session_factory.begin() as session:
        session.add(Instrument(id=1, symbol="AAPL", name="A"))
        await session.flush()
        session.add_all(
            MarketData(
                instrument_id=1,
                timestamp=T0 + timedelta(seconds=n),
                price=100.0 + n / 3,
                bid=None if n < 4 else 99.5 + n / 7,
                open_price=None if n < 4 else 1.000049,
                volume=None if n < 4 else n,
                deleted_at=None if n != 5 else T0,
            )
            for n in range(8)
        )
    native = await _native(session_factory)
    for include_deleted in (False, True):
        expected = await _json_range(session_factory, include_deleted=include_deleted)
        batches = await _batches(
            native, 1, START, END, include_deleted=include_deleted, batch_rows=2
        )
        assert _rows(batches) == expected
        assert [row["bid"] is None for row in expected][:5] == [True] * 4 + [False]


async def test_bounds_in_any_zone_select_the_json_ticks(session_factory: Sessions) -> None:
    """Start inclusive, end exclusive, to the microsecond, whatever zone they are given in."""
    await _load(session_factory)
    native = await _native(session_factory)
    plus_two = timezone(timedelta(hours=2))
    start = (T0 + timedelta(microseconds=1)).astimezone(plus_two)  # the second tick's instant
    end = (T0 + timedelta(seconds=3)).astimezone(plus_two)  # the tick at T0 + 3 s left out
    expected = [
        row
        for row in await _json_range(session_factory)
        if T0 + timedelta(microseconds=1) <= row["timestamp"] < T0 + timedelta(seconds=3)
    ]
    assert len(expected) == 4
    batches = await _batches(native, 1, start, end, batch_rows=3)
    assert _rows(batches) == expected
    assert batches[0].schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


async def test_empty_ranges_yield_nothing_and_a_backward_one_is_refused(
    session_factory: Sessions,
) -> None:
    await _load(session_factory)
    native = await _native(session_factory)
    later = T0 + timedelta(days=3)
    assert await _batches(native, 1, later, later + timedelta(days=1)) == []
    assert await _batches(native, 99, START, END) == []
    with pytest.raises(ValidationError, match="must be after start"):
        await _batches(native, 1, T0, T0)


class _ReaderPages:
    """Counts the pages the SQLite reader process gives, and can kill it after its first.
    Once started, the process is waited for (pages are read here meanwhile otherwise, as
    many as its start takes: a count the test could not know)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, kill_after_first: bool = False):
        self.count = self.started = 0
        receive, ready = sqlite_pages.ReaderProcess.receive, sqlite_pages.ReaderProcess.ready
        start = sqlite_pages.ReaderProcess.__init__

        def started(reader: sqlite_pages.ReaderProcess, uri: str) -> None:
            self.started += 1
            start(reader, uri)
            self.processes.append(reader.process)

        monkeypatch.setattr(sqlite_pages.ReaderProcess, "__init__", started)
        self.processes: list[Any] = []
        monkeypatch.setattr(
            sqlite_pages.ReaderProcess, "ready", lambda reader, timeout=0: ready(reader, 60)
        )

        def counted(reader: sqlite_pages.ReaderProcess) -> Any:
            batch = receive(reader)
            self.count += 1
            if kill_after_first and self.count == 1:
                reader.process.kill()
            return batch

        monkeypatch.setattr(sqlite_pages.ReaderProcess, "receive", counted)


async def test_an_export_through_adbc_is_the_file_the_session_path_writes(
    engine: AsyncEngine,
    session_factory: Sessions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the driver is not installed, the export reads through the session: the same
    rows either way, soft-deleted ticks left out."""
    await _load(session_factory)
    expected = await _json_range(session_factory)
    reader = _ReaderPages(monkeypatch)
    totals: list[int] = []
    native = await export_range(
        session_factory, "AAPL", START, END, tmp_path / "adbc.parquet", on_total=totals.append
    )
    # SQLite: an export's pages all come from the reader process, started at once.
    assert reader.count == (1 if engine.dialect.name == "sqlite" else 0)
    monkeypatch.setattr("tickvault.repositories.native.driver", lambda dialect: None)
    async with session_factory() as session:
        assert await NativeReads.of_session(session) is None
    fallback = await export_range(
        session_factory,
        "AAPL",
        START,
        END,
        tmp_path / "session.parquet",
        batch_rows=4,
        on_total=totals.append,
    )
    assert native.rows == fallback.rows == len(expected) == 9
    assert totals == [9, 9]  # counted while read on a connection of its own, or before
    for report in (native, fallback):
        table = pq.read_table(report.path)
        assert table.schema.equals(columns.tick_schema())
        assert table.to_pylist() == expected


async def test_the_monitor_counts_what_adbc_reads(
    session_factory: Sessions, engine: AsyncEngine
) -> None:
    await _load(session_factory)
    native = await _native(session_factory)
    monitor = DatabasePerformanceMonitor(engine)
    try:
        await monitor.collect_metrics()
        rows = sum(len(batch) for batch in await _batches(native, 1, START, END, batch_rows=4))
        metrics = await monitor.collect_metrics()
    finally:
        monitor.uninstrument()
    selects = metrics.by_table["market_data"]["SELECT"]
    assert rows == 9
    # SQLite: a statement a keyset page (4, 4, 1); PostgreSQL: one COPY.
    assert selects["count"] == (3 if engine.dialect.name == "sqlite" else 1)


async def test_a_long_range_is_read_by_the_sqlite_reader_process(
    engine: AsyncEngine,
    session_factory: Sessions,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLite: the first page is read here, the rest by the reader process (ADBC's C reader,
    in a process of its own); PostgreSQL: one COPY. The same rows either way."""
    await _load(session_factory)
    native = await _native(session_factory)
    reader = _ReaderPages(monkeypatch)
    expected = await _json_range(session_factory, include_deleted=True)
    batches = await _batches(native, 1, START, END, include_deleted=True, batch_rows=2)
    assert _rows(batches) == expected
    assert len(expected) == 10
    assert all(batch.num_rows <= 2 for batch in batches)
    # SQLite: 6 pages, the last one empty; all but the first from the reader process.
    sqlite = engine.dialect.name == "sqlite"
    assert (reader.started, reader.count) == ((1, 5) if sqlite else (0, 0))
    # A range of less than a batch starts no process, however many pages it is read in here.
    monkeypatch.setattr(sqlite_pages, "HERE_ROWS", 3)
    small = await _batches(native, 1, START, END, include_deleted=True, batch_rows=11)
    assert _rows(small) == expected
    assert [len(batch) for batch in small] == ([3, 3, 3, 1] if sqlite else [10])
    assert (reader.started, reader.count) == ((1, 5) if sqlite else (0, 0))
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


@pytest.mark.parametrize("failure", ["does not start", "killed after a page"])
async def test_when_the_reader_process_fails_the_rest_is_read_here(
    engine: AsyncEngine,
    session_factory: Sessions,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    """A reader process that cannot start or dies costs speed, not the read: the pages it
    did not give are read in this process, and the failure is logged."""
    await _load(session_factory)
    native = await _native(session_factory)
    if failure == "does not start":
        monkeypatch.setattr(sqlite_pages, "READER_MODULE", "tickvault.no_such_module")
    reader = _ReaderPages(monkeypatch, kill_after_first=failure == "killed after a page")
    expected = await _json_range(session_factory)
    assert _rows(await _batches(native, 1, START, END, batch_rows=2)) == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if engine.dialect.name == "postgresql":
        assert (warnings, reader.count) == ([], 0)
    elif failure == "does not start":
        assert reader.count == 0
        assert len(warnings) == 1
        assert "exit status 1" in warnings[0]
        assert "No module named tickvault.no_such_module" in warnings[0]
    else:
        assert reader.count == 1
        assert len(warnings) == 1
        assert "exit status -9" in warnings[0]
    # Its semaphore was given back: the next range is read by a process again.
    reader.count = 0
    monkeypatch.setattr(sqlite_pages, "READER_MODULE", "tickvault.repositories.sqlite_reader")
    monkeypatch.setattr(sqlite_pages.ReaderProcess, "receive", sqlite_pages.ReaderProcess.receive)
    for _ in range(3):
        assert _rows(await _batches(native, 1, START, END, batch_rows=2)) == expected


def _free_readers() -> int:
    """How many reader processes could start now."""
    free = 0
    while sqlite_pages.READERS.acquire(blocking=False):
        free += 1
    for _ in range(free):
        sqlite_pages.READERS.release()
    return free


async def _all_closed(reader: _ReaderPages, free: int) -> None:
    """Every reader process ended and its place given back (closing happens once the
    worker thread is done: at most a page later)."""
    for _ in range(200):
        if _free_readers() == free and all(p.poll() is not None for p in reader.processes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{_free_readers()} of {free} free; {reader.processes}")


@pytest.mark.parametrize("when", ["starting", "reading"])
async def test_a_cancelled_read_leaves_no_reader_behind(
    engine: AsyncEngine, session_factory: Sessions, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A caller cancelled while the read starts or reads (a client that hangs up, Ctrl-C):
    what the read opened is closed once its thread is done with it, never under it (that
    crashed the process), and no reader process or place is left behind."""
    await _load(session_factory)
    native = await _native(session_factory)
    reader = _ReaderPages(monkeypatch)
    free = _free_readers()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in native.range_batches(1, START, END, batch_rows=2, long=True):
            first.set()
            await asyncio.sleep(0)

    for _ in range(3):
        task = asyncio.ensure_future(consume())
        if when == "reading":
            await first.wait()
        else:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _all_closed(reader, free)
        first.clear()
    if engine.dialect.name == "sqlite":
        assert reader.started >= (3 if when == "reading" else 1)
    expected = await _json_range(session_factory)
    assert _rows(await _batches(native, 1, START, END, batch_rows=2)) == expected


async def test_a_cancelled_export_leaves_no_file_and_no_reader(
    session_factory: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _load(session_factory)
    reader = _ReaderPages(monkeypatch)
    free = _free_readers()
    path = tmp_path / "ticks.parquet"

    def cancel(rows: int) -> None:
        task.cancel()

    task = asyncio.ensure_future(
        export_range(session_factory, "AAPL", START, END, path, batch_rows=2, on_rows=cancel)
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    left = [name for name in os.listdir(tmp_path) if name.startswith("ticks")]
    assert left == []  # neither the file nor its .partial
    await _all_closed(reader, free)


async def test_an_export_to_a_place_it_cannot_write_says_so(
    session_factory: Sessions, tmp_path: Path
) -> None:
    await _load(session_factory)
    path = tmp_path / "missing" / "ticks.parquet"
    with pytest.raises(TickvaultError, match=r"missing/ticks.parquet: cannot write") as caught:
        await export_range(session_factory, "AAPL", START, END, path)
    assert not isinstance(caught.value, DatabaseError)


OTHER_PROCESS_WRITE = """
import asyncio, sqlite3, sys
import asyncpg
url, sql = sys.argv[1], sys.argv[2]
try:
    if url.startswith("postgresql"):
        async def write():
            connection = await asyncpg.connect(url)
            await connection.execute(sql)
            await connection.close()
        asyncio.run(write())
    else:
        with sqlite3.connect(url, timeout=0.2) as connection:
            connection.execute(sql)
    print("stored")
except (sqlite3.OperationalError, asyncpg.PostgresError) as exc:
    print("refused:", exc)
"""


async def test_a_read_during_a_write_transaction_loses_no_other_process_write(
    engine: AsyncEngine, session_factory: Sessions
) -> None:
    """The read's connection leaves the locks of this process's own open transaction alone:
    a write another process makes meanwhile either waits (SQLite: one writer) or is kept.
    (A second copy of SQLite in the process, as adbc-driver-sqlite links, released them when
    its connection closed: the other process wrote, and this transaction's commit lost it.)"""
    await _load(session_factory)
    native = await _native(session_factory)
    url = engine.url
    target = (
        str(url.database)
        if url.get_backend_name() == "sqlite"
        else url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    insert = (
        "INSERT INTO market_data (instrument_id, timestamp, price) "
        "VALUES (2, '2030-01-0{day} 00:00:00.000000', 1.5)"
    )
    async with engine.begin() as connection:
        await connection.exec_driver_sql(insert.format(day=1))  # this process's write lock
        # Pages of 2: the SQLite reader process reads all but the first.
        assert len(_rows(await _batches(native, 1, START, END, batch_rows=2))) == 9
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", OTHER_PROCESS_WRITE, target, insert.format(day=2)],
            capture_output=True,
            text=True,
            check=True,
        )
        other = done.stdout.strip()
    assert other == "stored" or other.startswith("refused: database is locked"), other
    async with engine.connect() as connection:
        stored = (
            await connection.exec_driver_sql(
                "SELECT count(*) FROM market_data WHERE instrument_id = 2 AND price = 1.5"
            )
        ).scalar_one()
    assert stored == (2 if other == "stored" else 1), other
