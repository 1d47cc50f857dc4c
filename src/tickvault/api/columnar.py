"""Arrow IPC stream and Parquet answers, streamed a record batch at a time.

Ticks come through ADBC where its driver is installed (``repositories.native``: the next
batch read while this one is sent), else a keyset page at a time through the session; either
way each batch is encoded and sent as it comes. The first batch is read before the response
starts, so an error then (an unreachable database) still gets its status; one after it cuts
the stream short, which an Arrow or Parquet reader reports as an incomplete stream, never
as a shorter answer.
"""

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any

from fastapi.responses import StreamingResponse

from tickvault.api.responses import Responses
from tickvault.api.runtime import Runtime
from tickvault.repositories import columns
from tickvault.repositories.market_data import MarketDataRepository, RangeCursor
from tickvault.repositories.native import NativeReads
from tickvault.services.export import ARROW_STREAM, PARQUET, encode

_BINARY = {"schema": {"type": "string", "format": "binary"}}
COLUMNAR_RESPONSES: Responses = {
    200: {
        "description": "JSON by default; with `Accept: application/vnd.apache.arrow.stream` an "
        "Arrow IPC stream, with `Accept: application/vnd.apache.parquet` a Parquet file, both "
        "streamed a record batch at a time.",
        "content": {ARROW_STREAM: _BINARY, PARQUET: _BINARY},
    },
    406: {
        "description": "The Accept header names no type this endpoint gives (JSON, Arrow "
        "stream, Parquet), or the answer cannot be written in the type asked for.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}


async def stream_ticks(
    runtime: Runtime,
    media_type: str,
    instrument_id: int,
    start: datetime,
    end: datetime,
    *,
    after: RangeCursor | None,
    include_deleted: bool,
) -> StreamingResponse:
    schema = columns.tick_schema()
    options: dict[str, Any] = {
        "after": after,
        "include_deleted": include_deleted,
        "batch_rows": runtime.settings.export_batch_rows,
    }

    async def chunks() -> AsyncGenerator[bytes, None]:
        if end <= start:
            async for chunk in encode(_no_batches(), schema, media_type):
                yield chunk
            return
        async with runtime.transaction() as session:  # the replica's, when reads go there
            native = await NativeReads.of_session(session)
            if native is None:
                batches = MarketDataRepository(session).range_batches(
                    instrument_id, start, end, **options
                )
                async with aclosing(batches), aclosing(encode(batches, schema, media_type)) as out:
                    async for chunk in out:
                        yield chunk
                return
        # After the session's transaction: ADBC reads on a connection of its own.
        batches = native.range_batches(instrument_id, start, end, **options)
        async with aclosing(batches), aclosing(encode(batches, schema, media_type)) as out:
            async for chunk in out:
                yield chunk

    return await _streamed(chunks(), media_type)


async def stream_table(runtime: Runtime, media_type: str, table: Any) -> StreamingResponse:
    """An Arrow table already in memory (at most 100,000 bars), in batches all the same."""
    batches = table.to_batches(max_chunksize=runtime.settings.export_batch_rows)

    async def each() -> AsyncIterator[Any]:
        for batch in batches:
            yield batch

    return await _streamed(encode(each(), table.schema, media_type), media_type)


async def _no_batches() -> AsyncGenerator[Any, None]:
    return
    yield  # an async generator that yields nothing


async def _streamed(chunks: AsyncGenerator[bytes, None], media_type: str) -> StreamingResponse:
    first = await anext(chunks)  # the first page's errors get their status

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type=media_type)
