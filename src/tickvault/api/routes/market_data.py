"""/market-data: post ticks (JSON or CSV), read latest / range / OHLCV, soft delete, restore."""

import io
from typing import Annotated

from fastapi import APIRouter, File, Header, Path, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tickvault.api.columnar import COLUMNAR_RESPONSES, stream_table, stream_ticks
from tickvault.api.negotiation import JSON, negotiate
from tickvault.api.responses import COMMON, NOT_FOUND, TOO_LARGE
from tickvault.api.routes._paging import (
    Cursor,
    Limit,
    TimeCursor,
    id_cursor,
    page_of,
    time_cursor,
)
from tickvault.api.runtime import RuntimeDep, get_runtime
from tickvault.api.schemas import (
    BarOut,
    IngestResult,
    InstrumentId,
    Interval,
    Page,
    RowId,
    TickBatch,
    TickOut,
    UtcDatetime,
)
from tickvault.api.security import READ, WRITE, WRITE_CHECK, WRITE_SECURITY
from tickvault.api.tick_csv import TICK_CSV, TICK_CSV_PATTERN, TICK_CSV_RULE
from tickvault.errors import ValidationError
from tickvault.monitoring.metrics import iso_utc
from tickvault.repositories.bars import Bar
from tickvault.repositories.columns import bar_table
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services.market_data import IdempotencyKey, LiveReport
from tickvault.services.readers import read_csv_stream

router = APIRouter(prefix="/market-data", tags=["market data"], responses=COMMON)
TickIdPath = Annotated[RowId, Path(description="Tick id.")]
InstrumentQuery = Annotated[InstrumentId, Query(description="Instrument id.")]
Start = Annotated[UtcDatetime, Query(description="From (inclusive), ISO 8601 with a zone.")]
End = Annotated[UtcDatetime, Query(description="To (exclusive), ISO 8601 with a zone.")]
MAX_BARS = 100_000
CSV_PART = {"file": {"contentType": "text/csv"}}
TickFile = Annotated[
    UploadFile,
    File(
        description=f"UTF-8 CSV; {TICK_CSV_RULE}.",
        json_schema_extra={"pattern": TICK_CSV_PATTERN},
    ),
]
MORE_BARS = {
    "Link": {
        "description": f'When there are more than {MAX_BARS:,} bars: `<URL>; rel="next"`, the '
        "same request from the end of the last bar sent.",
        "schema": {"type": "string"},
    }
}
IDEMPOTENCY_KEY = (
    "Makes the request safe to retry: the same key with the same body again gets the "
    "first response (header `Idempotent-Replayed: true`) and stores nothing again; "
    "with another body, 422; while the first is still running, 409. Keys are kept "
    "24 hours (`TICKVAULT_IDEMPOTENCY_KEY_HOURS`)."
)
KeyText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
IdempotencyHeader = Annotated[
    KeyText | None, Header(alias="Idempotency-Key", description=IDEMPOTENCY_KEY)
]
# POST /market-data reads the header itself (a Header parameter costs FastAPI as much again
# as a bare request's whole handling); OpenAPI says the same of it as of the one above.
_KEY_TEXT: TypeAdapter[str] = TypeAdapter(KeyText)
_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {
        "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}],
        "description": IDEMPOTENCY_KEY,
        "title": "Idempotency-Key",
    },
    "description": IDEMPOTENCY_KEY,
}


def _key_header(request: Request) -> str | None:
    """The Idempotency-Key header, checked as the ``IdempotencyHeader`` parameter would be."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    try:
        return _KEY_TEXT.validate_python(key)
    except PydanticValidationError as exc:
        errors = [{**error, "loc": ("header", "Idempotency-Key")} for error in exc.errors()]
        raise RequestValidationError(errors) from None


def _keyed(key: str | None, request: Request, body: bytes) -> IdempotencyKey | None:
    if key is None:
        return None
    # The path as the server got it (request.url would build the whole URL first).
    return IdempotencyKey.of(key, f"{request.method} {request.scope['path']}", body)


def _answer(report: LiveReport, response: Response) -> IngestResult:
    if report.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return IngestResult.model_validate(report)


@router.post(
    "",
    dependencies=WRITE_CHECK,
    responses=TOO_LARGE,
    openapi_extra={"security": WRITE_SECURITY, "parameters": [_KEY_PARAMETER]},
)
async def post_ticks(body: TickBatch, request: Request, response: Response) -> IngestResult:
    """Store a batch of ticks; answered once they are committed (with other clients' ticks,
    in one transaction, with their alert rules evaluated). Ticks that cannot be stored come
    back with their position and reason; the others are stored, with `ids` in the order
    sent. 503 with Retry-After (nothing stored) when the write queue is full or the
    database is unavailable. With an `Idempotency-Key`, the request's ticks are stored all
    or none, with its receipt."""
    idempotency = _keyed(_key_header(request), request, await request.body())
    runtime = await get_runtime(request)
    report = await runtime.market_data.store(body.ticks, wait=False, idempotency=idempotency)
    return _answer(report, response)


@router.post(
    "/csv",
    dependencies=WRITE,
    responses=TOO_LARGE,
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"encoding": CSV_PART}}}},
)
async def upload_csv(
    file: TickFile,
    runtime: RuntimeDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> IngestResult:
    """Store the ticks of a CSV file with a header row (columns as in the JSON batch), as
    `POST /market-data` does (an `Idempotency-Key` is matched on the file's content)."""
    name = file.filename or "upload.csv"
    content = await file.read()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    rows = list(read_csv_stream(io.StringIO(text, newline=""), name=name))
    if not TICK_CSV.match(text):  # the schema's pattern: the reader takes odder quoting
        raise ValidationError(f"{name}: {TICK_CSV_RULE}")
    # A file's other columns are ignored, as `tickvault ingest` does.
    report = await runtime.market_data.store(
        rows,
        wait=False,
        ignore_unknown_fields=True,
        idempotency=_keyed(idempotency_key, request, content),
    )
    return _answer(report, response)


@router.get("/latest", dependencies=READ)
async def latest(
    runtime: RuntimeDep,
    instrument_id: Annotated[
        list[InstrumentId] | None,
        Query(max_length=1000, description="Repeat for several; none for every instrument."),
    ] = None,
) -> list[TickOut]:
    """The latest tick of each instrument (soft-deleted ticks left out)."""
    async with runtime.transaction() as session:
        ticks = await MarketDataRepository(session).latest(instrument_id)
        return [TickOut.model_validate(t) for t in ticks]


@router.get("/range", dependencies=READ, response_model=Page[TickOut], responses=COLUMNAR_RESPONSES)
async def tick_range(
    request: Request,
    runtime: RuntimeDep,
    instrument_id: InstrumentQuery,
    start: Start,
    end: End,
    limit: Limit = 1000,
    cursor: TimeCursor = None,
    include_deleted: bool = False,
) -> Page[TickOut] | Response:
    """An instrument's ticks in time order, `start <= timestamp < end`, a page at a time
    (none when `end` is not after `start`).

    With `Accept: application/vnd.apache.arrow.stream` (or `application/vnd.apache.parquet`)
    the whole range after `cursor` comes as one Arrow stream (Parquet file), streamed a
    keyset page at a time; `limit` pages JSON only."""
    media_type = negotiate(request.headers.get("accept"))
    if media_type != JSON:
        return await stream_ticks(
            runtime,
            media_type,
            instrument_id,
            start,
            end,
            after=time_cursor(cursor),
            include_deleted=include_deleted,
        )
    if end <= start:
        return Page(items=[], next_cursor=None)
    async with runtime.transaction() as session:
        page = await MarketDataRepository(session).range(
            instrument_id,
            start,
            end,
            limit=limit,
            after=time_cursor(cursor),
            include_deleted=include_deleted,
        )
        return page_of(TickOut, page)


@router.get(
    "/ohlcv",
    dependencies=READ,
    response_model=list[BarOut],
    responses={**COLUMNAR_RESPONSES, 200: {**COLUMNAR_RESPONSES[200], "headers": MORE_BARS}},
)
async def ohlcv(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    instrument_id: InstrumentQuery,
    interval: Interval,
    start: Start,
    end: End,
) -> list[BarOut] | Response:
    """OHLCV bars (open, high, low, close, volume, VWAP, tick count), computed in SQL, for
    the buckets that hold ticks (none when `end` is not after `start`). At most 100,000 per
    answer: the `Link` header then gives the request for the rest. As JSON, an Arrow stream
    or Parquet, by `Accept` (as `/market-data/range`)."""
    media_type = negotiate(request.headers.get("accept"))
    bars: list[Bar] = []
    if end > start:
        async with runtime.transaction() as session:
            bars = await MarketDataRepository(session).ohlcv(
                instrument_id, interval, start, end, limit=MAX_BARS + 1
            )
    link = {}
    if len(bars) > MAX_BARS:
        bars = bars[:MAX_BARS]
        rest = request.url.include_query_params(start=iso_utc(bars[-1].end))
        link["Link"] = f'<{rest}>; rel="next"'
    if media_type != JSON:
        streamed = await stream_table(runtime, media_type, bar_table(bars))
        streamed.headers.update(link)
        return streamed
    response.headers.update(link)
    return [BarOut.model_validate(bar) for bar in bars]


@router.get("/deleted", dependencies=READ)
async def deleted_ticks(
    runtime: RuntimeDep,
    instrument_id: Annotated[InstrumentId | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[TickOut]:
    """Soft-deleted ticks, by id."""
    async with runtime.transaction() as session:
        page = await MarketDataRepository(session).find_deleted(
            instrument_id=instrument_id, limit=limit, after_id=id_cursor(cursor)
        )
        return page_of(TickOut, page)


@router.get("/{tick_id:int}", dependencies=READ, responses=NOT_FOUND)
async def get_tick(tick_id: TickIdPath, runtime: RuntimeDep) -> TickOut:
    async with runtime.transaction() as session:
        return TickOut.model_validate(await MarketDataRepository(session).get(tick_id))


@router.delete("/{tick_id:int}", dependencies=WRITE, responses=NOT_FOUND)
async def soft_delete_tick(tick_id: TickIdPath, runtime: RuntimeDep) -> TickOut:
    """Soft-delete a tick: hidden from every read until restored or purged."""
    async with runtime.transaction(write=True) as session:
        return TickOut.model_validate(await MarketDataRepository(session).soft_delete(tick_id))


@router.post("/{tick_id:int}/restore", dependencies=WRITE, responses=NOT_FOUND)
async def restore_tick(tick_id: TickIdPath, runtime: RuntimeDep) -> TickOut:
    async with runtime.transaction(write=True) as session:
        return TickOut.model_validate(await MarketDataRepository(session).restore(tick_id))
