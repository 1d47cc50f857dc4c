"""Validation of a whole Arrow record batch at once, by the row validator's rules.

``ColumnChecker(instruments, symbols)(batch)`` returns the batch as ``TickColumns`` when
every row passes, or ``None`` when any row might not: the caller then takes that batch
through the row validator (``tickvault.services.validation``), which says which rows and
why. So a refused row gets exactly the reason and position the row path gives it, and the
checks here only need to be strict, never complete: a value they do not recognise as
certainly valid (a string in a form Python's parsers take but these patterns do not, a
type they do not handle) sends the batch the row way.

Needs pyarrow; imported only for columnar input.
"""

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from tickvault.database.columns import TickColumns
from tickvault.services.validation import MAX_VOLUME, PRICE_FIELDS, PRICE_LIMIT

# What datetime.fromisoformat takes and the zone check accepts, narrowed to the forms files
# use; anything else goes the row way. The cast below refuses days a month lacks.
ISO_TIMESTAMP = (
    r"^\d{4}-\d\d-\d\d[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$"
WHOLE = r"^\d{1,18}$"  # up to 18 digits: within int64, and int() reads it alike
UTC_US = pa.timestamp("us", tz="UTC")


class _Unsure(Exception):
    """A value the vectorized checks cannot vouch for: the row path decides."""


class ColumnChecker:
    """``instruments`` maps id -> is_active, ``symbols`` symbol -> id (as ``TickValidator``)."""

    def __init__(self, instruments: Mapping[int, bool], symbols: Mapping[str, int]) -> None:
        self.active = pa.array([i for i, active in instruments.items() if active], pa.int64())
        self.symbols = pa.array(list(symbols), pa.string())
        self.symbol_ids = pa.array(list(symbols.values()), pa.int64())

    def __call__(self, batch: pa.RecordBatch) -> TickColumns | None:
        try:
            return self._check(batch)
        except (_Unsure, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None

    def _check(self, batch: pa.RecordBatch) -> TickColumns:
        n = batch.num_rows
        names = batch.schema.names
        if len(set(names)) != len(names):
            raise _Unsure
        columns = dict(zip(names, batch.columns, strict=True))
        instrument = self._instrument(columns.get("instrument_id"), columns.get("symbol"), n)
        timestamp = _timestamp(columns.get("timestamp"))
        prices = [_price(columns.get(name), n) for name in PRICE_FIELDS]
        high, low = prices[4], prices[5]
        if pc.any(pc.less(high, low), min_count=0).as_py():
            raise _Unsure
        volume = _volume(columns.get("volume"), n)
        return TickColumns((instrument, timestamp, *prices, volume))

    def _instrument(self, ids: pa.Array | None, symbols: pa.Array | None, n: int) -> pa.Array:
        by_id = None if ids is None else _whole(_given(ids), allow_float=False)
        by_symbol = None
        if symbols is not None:
            given = _given(symbols)
            if given.null_count < n:
                if not pa.types.is_string(given.type):
                    raise _Unsure
                by_symbol = pc.take(self.symbol_ids, pc.index_in(given, value_set=self.symbols))
                if by_symbol.null_count != given.null_count:
                    raise _Unsure  # an unknown symbol
        if by_id is not None and by_symbol is not None:
            both = pc.and_(pc.is_valid(by_id), pc.is_valid(by_symbol))
            if not _all(pc.equal(pc.filter(by_id, both), pc.filter(by_symbol, both))):
                raise _Unsure  # a symbol of another instrument (or true when empty)
            chosen = pc.coalesce(by_id, by_symbol)
        else:
            chosen = by_id if by_id is not None else by_symbol
        if chosen is None or chosen.null_count:
            raise _Unsure  # no instrument
        if not _all(pc.is_in(chosen, value_set=self.active)):
            raise _Unsure  # unknown or inactive
        return chosen


def _given(array: pa.Array) -> pa.Array:
    """``array`` with empty strings as nulls (a file's empty field is no value)."""
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        array = array.cast(pa.string())
    if pa.types.is_string(array.type):
        return pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)
    return array


def _timestamp(array: pa.Array | None) -> pa.Array:
    if array is None or array.null_count:
        raise _Unsure  # missing
    kind = array.type
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        array, kind = array.cast(pa.string()), pa.string()
    if pa.types.is_string(kind):
        if not _all(pc.match_substring_regex(array, ISO_TIMESTAMP)):
            raise _Unsure
        stamps = array.cast(UTC_US)
    elif pa.types.is_timestamp(kind) and kind.tz is not None:
        # Nanoseconds only when whole microseconds: the row path would keep the rest.
        stamps = array.cast(pa.timestamp("us", tz=kind.tz)).cast(UTC_US)
    else:
        raise _Unsure  # no zone, or not a date and time
    years = pc.year(stamps)
    if not _all(pc.and_(pc.greater(years, 1), pc.less(years, 9999))):
        raise _Unsure  # the row path checks the ends of the calendar itself
    return stamps


def _price(array: pa.Array | None, n: int) -> pa.Array:
    if array is None or pa.types.is_null(array.type):
        return pa.nulls(n, pa.float64())
    array = _given(array)
    kind = array.type
    if pa.types.is_string(kind):
        if not _all(pc.match_substring_regex(array, DECIMAL)):
            raise _Unsure
    elif not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise _Unsure  # bool, decimal, …: the row path's own words
    prices = array.cast(pa.float64())
    if not _all(pc.less_equal(pc.abs(prices), PRICE_LIMIT)):
        raise _Unsure  # out of range, or not finite (NaN fails the comparison)
    return prices


def _volume(array: pa.Array | None, n: int) -> pa.Array:
    if array is None or pa.types.is_null(array.type):
        return pa.nulls(n, pa.int64())
    volumes = _whole(_given(array), allow_float=True)
    if not _all(pc.greater_equal(volumes, 0)):
        raise _Unsure
    return volumes


def _whole(array: pa.Array, *, allow_float: bool) -> pa.Array:
    """Whole numbers as int64 (or ``_Unsure``)."""
    kind = array.type
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.int64())
    if pa.types.is_string(kind):
        if not _all(pc.match_substring_regex(array, WHOLE)):
            raise _Unsure
        return array.cast(pa.int64())
    if pa.types.is_integer(kind):
        return array.cast(pa.int64())  # a uint64 past int64 raises: the row path decides
    if allow_float and pa.types.is_floating(kind):
        numbers = array.cast(pa.float64())
        whole = pc.and_(pc.equal(pc.floor(numbers), numbers), pc.less(numbers, float(MAX_VOLUME)))
        if not _all(whole):
            raise _Unsure
        return numbers.cast(pa.int64())
    raise _Unsure


def _all(mask: pa.Array) -> bool:
    """Every value true, nulls (no value) aside; true when there is none."""
    return pc.all(mask, skip_nulls=True, min_count=0).as_py() is True
