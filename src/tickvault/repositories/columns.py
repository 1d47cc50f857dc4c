"""Ticks and bars as Arrow columns, with the values the JSON API gives.

Timestamps are ``timestamp[us, tz=UTC]``; prices float64 rounded to 4 decimals exactly as
Python's ``round(x, 4)`` rounds them (what every JSON answer holds); ids, counts and volumes
int64 (an instrument id int32, as its column). pyarrow is optional: it is imported when a
table is asked for, and its absence is a clear ``NotAcceptable``.
"""

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tickvault.errors import NotAcceptable

if TYPE_CHECKING:
    from tickvault.repositories.bars import Bar

# The columns of a tick, in the order of the JSON API's tick (TickOut).
TICK_COLUMNS = (
    "id", "instrument_id", "timestamp", "price", "bid", "ask",
    "open_price", "high_price", "low_price", "volume", "deleted_at",
)  # fmt: skip
PRICE_COLUMNS = ("price", "bid", "ask", "open_price", "high_price", "low_price")
BAR_COLUMNS = ("start", "end", "open", "high", "low", "close", "volume", "vwap", "ticks")
INT64_MAX = 2**63 - 1
# Past these, round(x, 4) is left to Python: x * 10**4 may then be off by more than the
# margin that tells a value from a tie (prices are within ±99,999,999.9999).
_VECTOR_LIMIT = 1e9
_TIE_MARGIN = 1e-3


def arrow() -> Any:
    """The ``pyarrow`` module, or a clear error saying how to install it."""
    try:
        import pyarrow
    except ImportError as exc:
        raise NotAcceptable(
            "Arrow and Parquet output need pyarrow: pip install 'tickvault[arrow]'"
        ) from exc
    return pyarrow


def tick_schema() -> Any:
    pa = arrow()
    utc = pa.timestamp("us", tz="UTC")
    price = [pa.field(name, pa.float64()) for name in PRICE_COLUMNS]
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("instrument_id", pa.int32(), nullable=False),
            pa.field("timestamp", utc, nullable=False),
            *price,
            pa.field("volume", pa.int64()),
            pa.field("deleted_at", utc),
        ]
    )


def bar_schema() -> Any:
    pa = arrow()
    utc = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            pa.field("start", utc, nullable=False),
            pa.field("end", utc, nullable=False),
            *(pa.field(name, pa.float64(), nullable=False) for name in BAR_COLUMNS[2:6]),
            pa.field("volume", pa.int64(), nullable=False),
            pa.field("vwap", pa.float64()),
            pa.field("ticks", pa.int64(), nullable=False),
        ]
    )


def round4(values: Any) -> Any:
    """A float64 Arrow array rounded as ``round(x, 4)`` rounds each value, vectorized.

    Python rounds the exact binary value, half to even; ``x * 10**4`` in floating point may
    land a hair off a tie, so the values whose product is within a margin of one (and the
    very large ones) are rounded by Python itself. The rest: the nearest integer of the
    product, divided by 10**4 (one correctly rounded division: the double nearest the
    4-decimal value, as ``round`` returns).
    """
    pa = arrow()
    pc = _compute()
    scaled = pc.multiply(values, 1e4)
    rounded = pc.divide(pc.round(scaled), 1e4)
    fraction = pc.subtract(scaled, pc.floor(scaled))
    doubtful = pc.or_(
        pc.less(pc.abs(pc.subtract(fraction, 0.5)), _TIE_MARGIN),
        pc.greater_equal(pc.abs(values), _VECTOR_LIMIT),
    )
    doubtful = pc.fill_null(doubtful, False)
    if not pc.any(doubtful).as_py():
        return rounded
    exact = [round4_scalar(v) for v in pc.filter(values, doubtful).to_pylist()]
    return pc.replace_with_mask(rounded, doubtful, pa.array(exact, pa.float64()))


def round4_scalar(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return value
    return round(value, 4)


def _compute() -> Any:
    import pyarrow.compute

    return pyarrow.compute


def tick_batch(
    rows: Sequence[Sequence[Any]], *, timestamps_as_text: bool, rounded: bool = True
) -> Any:
    """Rows of ``TICK_COLUMNS`` values as one record batch of ``tick_schema()``.

    ``timestamps_as_text``: SQLite's stored text (naive UTC, ``2024-05-06 13:30:00.000000``),
    parsed by Arrow; otherwise timezone-aware datetimes. Prices rounded as ``round4`` rounds
    them, unless not ``rounded`` (``rounded_prices`` then does it).
    """
    pa = arrow()
    schema = tick_schema()
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * 11
    arrays = []
    for name, values in zip(TICK_COLUMNS, columns, strict=True):
        kind = schema.field(name).type
        if name in ("timestamp", "deleted_at"):
            arrays.append(_timestamps(pa, values, kind, timestamps_as_text))
        elif name in PRICE_COLUMNS:
            prices = pa.array(values, pa.float64())
            arrays.append(round4(prices) if rounded else prices)
        else:
            arrays.append(pa.array(values, kind))
    return pa.record_batch(arrays, schema=schema)


def as_tick_batch(batch: Any, *, rounded: bool = True) -> Any:
    """A record batch of ``TICK_COLUMNS`` as an ADBC driver typed them, as one of
    ``tick_schema()``: prices rounded as ``round4`` rounds them (unless not ``rounded``:
    ``rounded_prices`` then does it). PostgreSQL's driver types them from the table;
    SQLite's from the values of its first batch (the stored text of a timestamp as a string,
    a column of NULLs alone as int64)."""
    pa = arrow()
    schema = tick_schema()
    arrays = []
    for name in TICK_COLUMNS:
        values = batch.column(name)
        kind = schema.field(name).type
        if name in PRICE_COLUMNS and rounded and values.null_count < len(values):
            arrays.append(round4(values.cast(pa.float64())))
        elif name in ("timestamp", "deleted_at") and pa.types.is_string(values.type):
            arrays.append(values.cast(pa.timestamp("us")).cast(kind))  # naive UTC text
        else:  # a price column of NULLs alone has nothing to round
            arrays.append(values.cast(kind))
    return pa.record_batch(arrays, schema=schema)


def rounded_prices(batch: Any) -> Any:
    """A batch of ``tick_schema()`` with its prices rounded as ``round4`` rounds them."""
    pa = arrow()
    arrays = [
        round4(batch.column(name))
        if name in PRICE_COLUMNS and batch.column(name).null_count < batch.num_rows
        else batch.column(name)
        for name in TICK_COLUMNS
    ]
    return pa.record_batch(arrays, schema=batch.schema)


def _timestamps(pa: Any, values: Sequence[Any], kind: Any, as_text: bool) -> Any:
    if as_text:
        return pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(kind)
    return pa.array(values, kind)


def stored_instant(value: Any) -> datetime:
    """A timestamp as selected raw (SQLite's text or a datetime) as an aware datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    instant: datetime = value
    return instant.astimezone(UTC)


def bar_table(bars: Sequence["Bar"]) -> Any:
    """Bars as a table of ``bar_schema()``; a volume past int64 is ``NotAcceptable``."""
    pa = arrow()
    for bar in bars:
        if bar.volume > INT64_MAX:
            raise NotAcceptable(
                f"the bar at {bar.start.isoformat()} holds a volume of {bar.volume}, past "
                "Arrow's int64: ask for these bars as JSON (application/json)"
            )
    schema = bar_schema()
    arrays = []
    for name in BAR_COLUMNS:
        values = [getattr(bar, name) for bar in bars]
        if schema.field(name).type == pa.float64():
            arrays.append(round4(pa.array(values, pa.float64())))
        else:
            arrays.append(pa.array(values, schema.field(name).type))
    return pa.table(arrays, schema=schema)
