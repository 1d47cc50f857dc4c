"""Validation of a whole Arrow record batch at once, by the row validator's rules.

``ColumnChecker(instruments, symbols)(batch)`` returns the batch as ``TickColumns`` when
every row passes, or ``None`` when any row might not: the caller then takes that batch
through the row validator (``tickvault.services.validation``), which says which rows and
why. So a refused row gets exactly the reason and position the row path gives it, and the
checks here only need to be strict, never complete: a value they do not recognise as
certainly valid (a string in a form Python's parsers take but Arrow's casts do not, a type
they do not handle) sends the batch the row way.

Needs pyarrow; imported only for columnar input.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from tickvault.database.columns import TickColumns
from tickvault.services.validation import MAX_VOLUME, PRICE_FIELDS, PRICE_LIMIT

# Text is read by Arrow's own casts, no pattern matched first: each cast takes a subset of
# what the row path takes and reads it to the same value, so a batch the casts read whole
# needs only the checks below. The subsets, as tested against the row validator:
# - text to timestamp (ISO 8601): YYYY-MM-DD, T or a space, hh[:mm[:ss[.f{1,6}]]], and a
#   zone Z, ±hh, ±hhmm or ±hh:mm, required for a zoned type. datetime.fromisoformat takes
#   all of it, and the row path's zone check these zones. Arrow refuses a missing zone,
#   days a month lacks, hour 24, second 60, offsets of 24 h or more, more than 6 digits of
#   fraction, spaces around (the row path strips them: those go the row way).
# - text to float64: plain decimals, to the nearest double as float() reads them, and
#   nan, inf, "nan(…)": all three fail the range check, so the row path decides.
# - text to int64: digits with a sign, and 0x hexadecimal, which int() refuses: digits
#   alone are let through (ascii_is_decimal), at most 18 of them (int() refuses more than
#   4,300, even as leading zeros; 18 digits are within int64).
UTC_US = pa.timestamp("us", tz="UTC")
WHOLE_DIGITS = 18
# Years 2 to 9998 in UTC (the row path checks the ends of the calendar itself), as the
# int64 microseconds since 1970 of timestamp[us]: two comparisons of the batch's min and max.
_EPOCH, _US = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
FIRST_US = (datetime(2, 1, 1, tzinfo=UTC) - _EPOCH) // _US
END_US = (datetime(9999, 1, 1, tzinfo=UTC) - _EPOCH) // _US


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
        stamps = array.cast(UTC_US)  # ArrowInvalid for text it does not read: the row way
    elif pa.types.is_timestamp(kind) and kind.tz is not None:
        # Nanoseconds only when whole microseconds: the row path would keep the rest.
        stamps = array.cast(pa.timestamp("us", tz=kind.tz)).cast(UTC_US)
    else:
        raise _Unsure  # no zone, or not a date and time
    ends = pc.min_max(stamps.cast(pa.int64())).as_py()  # None for an empty batch
    if len(stamps) and not FIRST_US <= ends["min"] <= ends["max"] < END_US:
        raise _Unsure  # year 1 or 9999 in UTC: the row path decides
    return stamps


def _price(array: pa.Array | None, n: int) -> pa.Array:
    if array is None or pa.types.is_null(array.type):
        return pa.nulls(n, pa.float64())
    array = _given(array)
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_floating(kind) or pa.types.is_integer(kind)):
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
        if not _all(pc.ascii_is_decimal(array)) or _longest(array) > WHOLE_DIGITS:
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


def _longest(array: pa.Array) -> int:
    return int(pc.max(pc.binary_length(array)).as_py() or 0)


def _all(mask: pa.Array) -> bool:
    """Every value true, nulls (no value) aside; true when there is none."""
    return pc.all(mask, skip_nulls=True, min_count=0).as_py() is True
