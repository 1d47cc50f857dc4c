"""OHLCV bars computed in SQL, the same on SQLite and PostgreSQL.

A bar covers ``[bucket, bucket + interval)`` with buckets aligned to the Unix epoch: open is
the first price in it (by timestamp, then id), close the last, high and low the extremes,
volume the sum, VWAP = sum(price * volume) / sum(volume), ticks the count. Ticks without a
price (quotes only) and soft-deleted ticks are left out.
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
        return cls(
            start=start,
            end=datetime.fromtimestamp(int(row["bucket"]) + seconds, UTC),
            open=float(row["open"]),
            high=float(row["high"]),
            low=float(row["low"]),
            close=float(row["close"]),
            volume=int(row["volume"] or 0),
            vwap=float(row["vwap"]) if row["vwap"] is not None else None,
            ticks=int(row["ticks"]),
        )


def _bucket(dialect: str, seconds: int) -> ColumnElement[Any]:
    if dialect == "postgresql":
        epoch = func.floor(func.extract("epoch", MarketData.timestamp))
        return cast(func.floor(epoch / seconds) * seconds, BigInteger)
    # SQLite keeps UTC text; strftime('%s') reads it as whole UTC seconds, rounded down (also
    # before 1970). SQLite's integer division truncates toward zero, so a bucket is taken as
    # epoch - (epoch mod seconds), with the remainder made non-negative: floor on both engines.
    epoch_s = cast(func.strftime("%s", MarketData.timestamp), Integer)
    return epoch_s - ((epoch_s % seconds) + seconds) % seconds


def ohlcv_query(
    dialect: str, instrument_id: int, seconds: int, start: datetime, end: datetime
) -> Select[Any]:
    if end <= start:
        raise ValidationError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    bucket = _bucket(dialect, seconds)
    ranked = (
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
    traded = func.sum(ranked.c.volume)
    return (
        select(
            ranked.c.bucket,
            func.max(case((ranked.c.first == 1, ranked.c.price))).label("open"),
            func.max(ranked.c.price).label("high"),
            func.min(ranked.c.price).label("low"),
            func.max(case((ranked.c.last == 1, ranked.c.price))).label("close"),
            traded.label("volume"),
            (func.sum(ranked.c.price * ranked.c.volume) / func.nullif(traded, 0)).label("vwap"),
            func.count().label("ticks"),
        )
        .group_by(ranked.c.bucket)
        .order_by(ranked.c.bucket)
    )
