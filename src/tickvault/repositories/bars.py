"""OHLCV bars computed in SQL, the same on SQLite and PostgreSQL.

A bar covers ``[bucket, bucket + interval)`` with buckets aligned to the Unix epoch: open is
the first price in it (by timestamp, then id), close the last, high and low the extremes,
volume the sum, VWAP = sum(price * volume) / sum(volume), ticks the count. Ticks without a
price (quotes only) and soft-deleted ticks are left out.

Volumes are summed exactly on both engines, past 64 bits too (a bar of a few ticks near the
largest volume a tick may have): PostgreSQL's ``sum(bigint)`` is a NUMERIC; SQLite's ``SUM``
of integers fails with "integer overflow" (and ``TOTAL`` is a float), so there each volume
is summed as two 32-bit halves, which cannot overflow below 2**31 ticks in one bar, and
joined in Python.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, Select, case, cast, func, select

from tickvault.errors import ValidationError
from tickvault.models import MarketData

_INTERVAL = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_INTERVAL_SECONDS = 366 * 86400


def parse_interval(interval: str) -> int:
    """``"5m"`` → 300; a clear error for anything else."""
    match = _INTERVAL.match(interval.strip())
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if not 1 <= seconds <= MAX_INTERVAL_SECONDS:
        raise ValidationError(
            f"interval {interval!r} not understood: use a number and s, m, h or d "
            "(1s, 1m, 5m, 15m, 1h, 1d)"
        )
    return seconds


_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def _instant(seconds: int) -> datetime:
    """``seconds`` after the epoch, in UTC; the calendar's last instant past its end (the
    bar of 9999-12-31 ends there)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return _LAST_INSTANT


@dataclass(frozen=True)
class Bar:
    start: datetime
    end: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float | None
    ticks: int

    @classmethod
    def from_row(cls, row: Any, seconds: int) -> "Bar":
        start = datetime.fromtimestamp(int(row["bucket"]), UTC)
        if "volume_high" in row:  # SQLite: the two halves
            high_half, low_half = row["volume_high"], row["volume_low"]
            volume = None if low_half is None else (int(high_half) << 32) + int(low_half)
        else:
            volume = None if row["volume"] is None else int(row["volume"])
        turnover = row["turnover"]
        return cls(
            start=start,
            end=_instant(int(row["bucket"]) + seconds),
            open=float(row["open"]),
            high=float(row["high"]),
            low=float(row["low"]),
            close=float(row["close"]),
            volume=volume or 0,
            vwap=float(turnover) / volume if volume and turnover is not None else None,
            ticks=int(row["ticks"]),
        )


def _bucket(dialect: str, seconds: int) -> ColumnElement[Any]:
    if dialect == "postgresql":
        epoch = func.floor(func.extract("epoch", MarketData.timestamp))
        return cast(func.floor(epoch / seconds) * seconds, BigInteger)
    # SQLite keeps UTC text, "YYYY-MM-DD HH:MM:SS.ffffff": strftime('%s') of its first 19
    # characters is the whole UTC second (also before 1970; of the whole text, it rounds to
    # the millisecond first, and a tick in a bar's last half millisecond went to the next
    # bar). SQLite's integer division truncates toward zero, so a bucket is taken as
    # epoch - (epoch mod seconds), with the remainder made non-negative: floor on both engines.
    epoch_s = cast(func.strftime("%s", func.substr(MarketData.timestamp, 1, 19)), Integer)
    return epoch_s - ((epoch_s % seconds) + seconds) % seconds


def ohlcv_query(
    dialect: str, instrument_id: int, seconds: int, start: datetime, end: datetime
) -> Select[Any]:
    ranked = ranked_ticks(dialect, instrument_id, seconds, start, end)
    return (
        select(
            ranked.c.bucket,
            func.max(case((ranked.c.first == 1, ranked.c.price))).label("open"),
            func.max(ranked.c.price).label("high"),
            func.min(ranked.c.price).label("low"),
            func.max(case((ranked.c.last == 1, ranked.c.price))).label("close"),
            *_volume_sums(dialect, ranked.c.volume),
            func.sum(ranked.c.price * ranked.c.volume).label("turnover"),
            func.count().label("ticks"),
        )
        .group_by(ranked.c.bucket)
        .order_by(ranked.c.bucket)
    )


def _volume_sums(dialect: str, volume: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    if dialect == "postgresql":
        return [func.sum(volume).label("volume")]  # NUMERIC: exact at any size
    return [
        func.sum(volume.op(">>")(32)).label("volume_high"),
        func.sum(volume.op("&")(0xFFFF_FFFF)).label("volume_low"),
    ]


def ranked_ticks(
    dialect: str, instrument_id: int, seconds: int, start: datetime, end: datetime
) -> Any:
    """The ticks of the bars, each with its bucket and its rank from the bucket's first
    (``first``) and last (``last``) tick."""
    if end <= start:
        raise ValidationError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    bucket = _bucket(dialect, seconds)
    return (
        select(
            bucket.label("bucket"),
            MarketData.price,
            MarketData.volume,
            func.row_number()
            .over(partition_by=bucket, order_by=(MarketData.timestamp, MarketData.id))
            .label("first"),
            func.row_number()
            .over(partition_by=bucket, order_by=(MarketData.timestamp.desc(), MarketData.id.desc()))
            .label("last"),
        )
        .where(
            MarketData.instrument_id == instrument_id,
            MarketData.timestamp >= start,
            MarketData.timestamp < end,
            MarketData.price.is_not(None),
            MarketData.deleted_at.is_(None),
        )
        .subquery()
    )
