"""Ticks and bars out as Arrow: an IPC stream or Parquet, encoded a record batch at a time.

The HTTP API streams ``encode(...)``'s chunks as they come; ``export_range`` writes a file
(``tickvault export``). Both read ticks on a connection of their own where they can
(``repositories.native``), else through the session. Either way memory holds a batch or
two, however long the range::

    report = await export_range(sessions, 1, start, end, Path("aapl.parquet"))
"""

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.errors import NotAcceptable, TickvaultError, ValidationError
from tickvault.repositories import columns
from tickvault.repositories.instruments import InstrumentRepository
from tickvault.repositories.market_data import BATCH_ROWS, MarketDataRepository
from tickvault.repositories.native import NativeReads

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"  # the IPC file format (Feather v2)
PARQUET = "application/vnd.apache.parquet"
FILE_FORMATS = {".parquet": PARQUET, ".arrow": ARROW_FILE}


class _Chunks:
    """A write-only file that hands back what was written since the last ``take()``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts.clear()
        return chunk


def writer(sink: Any, schema: Any, media_type: str) -> Any:
    """A Parquet, Arrow IPC stream or Arrow IPC file writer on ``sink`` (a path or a
    file)."""
    pa = columns.arrow()
    if media_type == PARQUET:
        import pyarrow.parquet as pq

        # Dictionary pages for the instrument (one value a file) alone: on prices, ids and
        # times they cost three times the encoding time and make the file larger.
        dictionary = [name for name in ("instrument_id",) if name in schema.names]
        return pq.ParquetWriter(sink, schema, use_dictionary=dictionary)
    if media_type == ARROW_STREAM:
        return pa.ipc.new_stream(sink, schema)
    if media_type == ARROW_FILE:
        return pa.ipc.new_file(sink, schema)
    raise NotAcceptable(f"no Arrow writer for {media_type}")


async def encode(
    batches: AsyncIterator[Any], schema: Any, media_type: str
) -> AsyncGenerator[bytes, None]:
    """``batches`` as the bytes of one IPC stream or Parquet file, a chunk per batch (a
    Parquet row group each); an empty input still gives a whole, readable stream or file."""
    sink = _Chunks()
    out = writer(sink, schema, media_type)
    try:
        async for batch in batches:
            out.write_batch(batch)
            if chunk := sink.take():
                yield chunk
    finally:
        out.close()
    yield sink.take()


async def resolve_instrument(session: AsyncSession, instrument: str) -> int:
    """``"AAPL"`` or ``"1"`` → the instrument's id (``NotFoundError`` if there is none)."""
    repository = InstrumentRepository(session)
    if instrument.isdigit():
        return (await repository.get(int(instrument))).id
    return (await repository.get_by_symbol(instrument)).id


@dataclass(frozen=True)
class ExportReport:
    path: Path
    rows: int
    instrument_id: int


async def export_range(
    session_factory: async_sessionmaker[AsyncSession],
    instrument: str,
    start: datetime,
    end: datetime,
    path: Path,
    *,
    batch_rows: int = BATCH_ROWS,
    on_total: Callable[[int], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the instrument's ticks in ``[start, end)`` to ``path`` (``.parquet``, or
    ``.arrow`` for an Arrow IPC file), soft-deleted ticks left out.

    The file appears whole or not at all: it is written beside as ``<path>.partial`` and
    renamed once complete. ``on_total(n)`` hears the row count (once counted: while the
    rows are read, where they are read on a connection of their own), ``on_rows(k)`` each
    batch written.
    """
    media_type = FILE_FORMATS.get(path.suffix.lower())
    if media_type is None:
        raise ValidationError(f"{path}: expected a .parquet or .arrow file name")
    if end <= start:
        raise ValidationError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    partial = path.with_name(path.name + ".partial")
    async with session_factory.begin() as session:
        instrument_id = await resolve_instrument(session, instrument)
        native = await NativeReads.of_session(session)
        if native is None:
            if on_total is not None:
                on_total(await MarketDataRepository(session).count(instrument_id, start, end))
            batches = MarketDataRepository(session).range_batches(
                instrument_id, start, end, batch_rows=batch_rows
            )
            rows = await _write_file(partial, media_type, batches, on_rows)
    if native is not None:
        # After the session's transaction: read on a connection of its own. The count, on
        # a session of its own meanwhile: it walks the same rows, and the read need not
        # wait for it.
        counting = (
            None
            if on_total is None
            else asyncio.ensure_future(_count(session_factory, instrument_id, start, end, on_total))
        )
        try:
            batches = native.range_batches(
                instrument_id, start, end, batch_rows=batch_rows, long=True
            )
            rows = await _write_file(partial, media_type, batches, on_rows)
            if counting is not None:
                await counting
        except BaseException:
            if counting is not None:
                counting.cancel()
            with suppress(FileNotFoundError):
                os.remove(partial)
            raise
    os.replace(partial, path)
    return ExportReport(path, rows, instrument_id)


async def _count(
    session_factory: async_sessionmaker[AsyncSession],
    instrument_id: int,
    start: datetime,
    end: datetime,
    on_total: Callable[[int], None],
) -> None:
    async with session_factory() as session:
        on_total(await MarketDataRepository(session).count(instrument_id, start, end))


async def _write_file(
    partial: Path,
    media_type: str,
    batches: AsyncGenerator[Any, None],
    on_rows: Callable[[int], None] | None,
) -> int:
    """``batches`` written to ``partial``; the file removed if anything fails. Each batch is
    encoded in a worker thread, while the next is read."""
    rows = 0
    try:
        out = writer(str(partial), columns.tick_schema(), media_type)
    except OSError as exc:
        raise TickvaultError(f"{partial.with_suffix('')}: cannot write: {exc}") from exc
    writing: asyncio.Future[Any] | None = None
    try:
        async with aclosing(batches):
            async for batch in batches:
                # Shielded: cancelled (Ctrl-C), the write still ends before the file closes
                # (closed under a writing thread, the process crashed).
                writing = asyncio.ensure_future(asyncio.to_thread(out.write_batch, batch))
                await asyncio.shield(writing)
                rows += batch.num_rows
                if on_rows is not None:
                    on_rows(batch.num_rows)
        out.close()
    except BaseException as exc:
        if writing is not None and not writing.done():
            await asyncio.wait([writing])
        with suppress(Exception):
            out.close()
        with suppress(FileNotFoundError):
            os.remove(partial)
        if isinstance(exc, OSError):
            raise TickvaultError(f"{partial.with_suffix('')}: cannot write: {exc}") from exc
        raise
    return rows
