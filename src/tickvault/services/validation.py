"""Checks on one incoming tick: what makes a row storable, with the reason when it is not."""

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tickvault.database.bulk import TickRecord

PRICE_LIMIT = 99_999_999.9999
PRICE_FIELDS = ("price", "bid", "ask", "open_price", "high_price", "low_price")
TICK_FIELDS = frozenset(("instrument_id", "symbol", "timestamp", *PRICE_FIELDS, "volume"))
MAX_VOLUME = 2**63 - 1
# How an ISO 8601 date and time with a zone ends (Python's parser also takes offsets with
# seconds, and ignores some text after an offset: "…+00:00,219" would lose its ",219").
ZONE_AT_END = re.compile(r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")


class RowError(ValueError):
    """Why one row was refused."""


class UnreadableRow(dict[str, Any]):
    """A row a file reader could not read faithfully (more fields than the header, an
    unterminated quote): the values it could read, refused with ``reason``."""

    def __init__(self, values: Mapping[str, Any], reason: str) -> None:
        super().__init__(values)
        self.reason = reason


class TickValidator:
    """Turns an input mapping into a ``TickRecord``, or raises ``RowError`` with the reason.

    ``instruments`` maps instrument id -> is_active; ``symbols`` maps symbol -> id.
    """

    def __init__(self, instruments: Mapping[int, bool], symbols: Mapping[str, int]) -> None:
        self.instruments = instruments
        self.symbols = symbols

    def __call__(self, row: Mapping[str, Any]) -> TickRecord:
        if isinstance(row, UnreadableRow):
            raise RowError(row.reason)
        # The common case inline: an integer id of an active instrument, no symbol beside it.
        instrument_id = row.get("instrument_id")
        if (
            instrument_id.__class__ is not int
            or self.instruments.get(instrument_id) is not True
            or row.get("symbol") not in (None, "")
        ):
            instrument_id = self._instrument(row)
        return (instrument_id, *tick_values(row))

    def _instrument(self, row: Mapping[str, Any]) -> int:
        key = instrument_key(row)
        if isinstance(key, str):
            if key not in self.symbols:
                raise RowError(f"unknown instrument symbol {key!r}")
            instrument_id = self.symbols[key]
        else:
            instrument_id = key
            symbol = row.get("symbol")
            if symbol not in (None, "") and self.symbols.get(str(symbol)) != instrument_id:
                raise RowError(
                    f"symbol {str(symbol)!r} is not instrument {instrument_id}: give one of "
                    "instrument_id and symbol, or both of the same instrument"
                )
        active = self.instruments.get(instrument_id)
        if active is None:
            raise RowError(f"unknown instrument {instrument_id}")
        if not active:
            raise RowError(f"instrument {instrument_id} is inactive")
        return instrument_id


def unknown_fields(row: Mapping[str, Any]) -> None:
    """Refuse fields a tick does not have (a misspelt ``prcie`` would store no price)."""
    if not TICK_FIELDS.issuperset(row):
        names = ", ".join(repr(str(name)) for name in sorted(set(map(str, row)) - TICK_FIELDS))
        raise RowError(f"unknown field {names}" if "," not in names else f"unknown fields {names}")


def instrument_key(row: Mapping[str, Any]) -> int | str:
    """The instrument a row names: its id if given, else its symbol."""
    raw_id, symbol = row.get("instrument_id"), row.get("symbol")
    if raw_id in (None, ""):
        if symbol in (None, ""):
            raise RowError("no instrument: give instrument_id or symbol")
        return str(symbol)
    if isinstance(raw_id, bool) or (isinstance(raw_id, float) and not raw_id.is_integer()):
        raise RowError(f"instrument_id {raw_id!r} is not an integer")
    try:
        instrument_id = int(raw_id)
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"instrument_id {raw_id!r} is not an integer") from None
    if not 0 < instrument_id < 2**31:  # instruments.id is a 32-bit integer
        raise RowError(f"unknown instrument {instrument_id}")
    return instrument_id


def tick_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything but the instrument, checked: (timestamp, 6 prices, volume)."""
    get = row.get
    timestamp = _timestamp(get("timestamp"))
    prices = [
        get("price"),
        get("bid"),
        get("ask"),
        get("open_price"),
        get("high_price"),
        get("low_price"),
    ]  # fmt: skip  (PRICE_FIELDS, spelled out: a comprehension costs a frame per row)
    for i, value in enumerate(prices):
        # The common case inline: a float already in range (NaN fails the comparison).
        if not (
            value is None or (value.__class__ is float and -PRICE_LIMIT <= value <= PRICE_LIMIT)
        ):
            prices[i] = _price(PRICE_FIELDS[i], value)
    high, low = prices[4], prices[5]
    if high is not None and low is not None and high < low:
        raise RowError(f"high_price {high} is below low_price {low}")
    volume = get("volume")
    if volume.__class__ is not int or not 0 <= volume <= MAX_VOLUME:
        volume = _volume(volume)
    return (timestamp, *prices, volume)


def _timestamp(value: Any) -> datetime:
    # The common case first; years 1 and 9999 go the long way, where the check that the
    # instant exists in UTC as well is made.
    if (
        value.__class__ is datetime
        and value.tzinfo is not None
        and 1 < value.year < 9999
        and value.utcoffset() is not None
    ):
        return value
    if value in (None, ""):
        raise RowError("timestamp is missing")
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise RowError(f"timestamp {value!r} is not an ISO 8601 date and time") from None
        # A zone is at most 6 characters: searching from there finds the same, faster.
        if parsed.tzinfo is not None and not ZONE_AT_END.search(text, len(text) - 6):
            raise RowError(
                f"timestamp {value!r} is not an ISO 8601 date and time (its zone is not "
                "Z or ±hh:mm at the end)"
            )
        if parsed.tzinfo is not None and 1 < parsed.year < 9999:
            return parsed  # a parsed zone is a fixed offset: it exists in UTC as well
        value = parsed
    if not isinstance(value, datetime):
        raise RowError(f"timestamp {value!r} is not a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RowError(f"timestamp {value.isoformat()} has no time zone")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise RowError(f"timestamp {value.isoformat()} is out of range in UTC") from None
    return value


def _price(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RowError(f"{name} {value!r} is not finite")
    if abs(number) > PRICE_LIMIT:
        raise RowError(f"{name} {number} is outside ±99,999,999.9999")
    return number


def _volume(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"volume {value!r} is not a whole number")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise RowError(f"volume {value!r} is not a whole number")
    if number < 0:
        raise RowError(f"volume {number} is negative")
    if number > MAX_VOLUME:
        raise RowError(f"volume {number} is too large")
    return number
