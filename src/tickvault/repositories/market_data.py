"""Market data reads and soft delete: latest tick, time ranges, OHLCV bars.

Every read here leaves soft-deleted rows out (the session's filter) unless asked for.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from tickvault.database.session import INCLUDE_DELETED
from tickvault.errors import ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.repositories.bars import Bar, ohlcv_query, parse_interval
from tickvault.repositories.base import (
    Page,
    add_row,
    by_id,
    check_limit,
    fetch_page,
    get_row,
    soft_deleted,
)

# A position in (timestamp, id) order: where the next page of a range starts.
RangeCursor = tuple[datetime, int]


@dataclass(frozen=True)
class Latest:
    instrument_id: int
    tick: MarketData


class MarketDataRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, tick: MarketData) -> MarketData:
        return await add_row(
            self.session,
            tick,
            "tick",
            foreign_key=ValidationError,
            foreign_key_message=f"instrument {tick.instrument_id} does not exist",
        )

    async def get(self, tick_id: int, *, include_deleted: bool = False) -> MarketData:
        return await get_row(
            self.session, MarketData, tick_id, "tick", include_deleted=include_deleted
        )

    async def get_active_records(self, instrument_id: int) -> Sequence[MarketData]:
        """The instrument's ticks that are not soft-deleted, instrument loaded, in time order."""
        query = (
            select(MarketData)
            .where(MarketData.instrument_id == instrument_id)
            .options(selectinload(MarketData.instrument))
            .order_by(MarketData.timestamp, MarketData.id)
        )
        return list(await self.session.scalars(query))

    async def latest(self, instrument_ids: Sequence[int] | None = None) -> list[MarketData]:
        """The latest tick of each instrument (all, or those given), in one query.

        Per instrument, a correlated ``ORDER BY timestamp DESC, id DESC LIMIT 1`` subquery:
        one backward probe of ix_market_data_instrument_timestamp (instrument_id, timestamp,
        id) on both engines, however long ago the instrument last traded.
        """
        inner = (
            select(MarketData.id)
            .where(MarketData.instrument_id == Instrument.id, MarketData.deleted_at.is_(None))
            .order_by(MarketData.timestamp.desc(), MarketData.id.desc())
            .limit(1)
            .correlate(Instrument)
            .scalar_subquery()
        )
        ids = select(inner).select_from(Instrument)
        if instrument_ids is not None:
            ids = ids.where(Instrument.id.in_(list(instrument_ids)))
        query = (
            select(MarketData)
            .where(MarketData.id.in_(ids.scalar_subquery()))
            # The subquery leaves soft-deleted ticks out itself.
            .execution_options(**{INCLUDE_DELETED: True})
        )
        # One row per instrument: ordered here, so the plan has no sort step at all.
        return sorted(await self.session.scalars(query), key=lambda tick: tick.instrument_id)

    async def range(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        limit: int = 1000,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
    ) -> Page[MarketData, RangeCursor]:
        """Ticks with ``start <= timestamp < end`` in time order, a page at a time."""
        query = _in_range(select(MarketData), instrument_id, start, end)
        if after is not None:
            after_ts, after_id = after
            query = query.where(
                or_(
                    MarketData.timestamp > after_ts,
                    and_(MarketData.timestamp == after_ts, MarketData.id > after_id),
                )
            )
        query = (
            query.order_by(MarketData.timestamp, MarketData.id)
            .limit(check_limit(limit) + 1)
            .execution_options(**{INCLUDE_DELETED: include_deleted})
        )
        return await fetch_page(self.session, query, limit, _by_time)

    async def ohlcv(
        self,
        instrument_id: int,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
    ) -> list[Bar]:
        """Bars of ``interval`` (1s, 1m, 5m, 15m, 1h, 1d, …) computed in SQL; the first
        ``limit`` of them if given."""
        seconds = parse_interval(interval)
        dialect = (await self.session.connection()).dialect.name
        query = ohlcv_query(dialect, instrument_id, seconds, start, end)
        result = await self.session.execute(query if limit is None else query.limit(limit))
        return [Bar.from_row(row, seconds) for row in result.mappings()]

    async def soft_delete(self, tick_id: int) -> MarketData:
        tick = await self.get(tick_id, include_deleted=True)
        tick.soft_delete()
        await self.session.flush()
        return tick

    async def restore(self, tick_id: int) -> MarketData:
        tick = await self.get(tick_id, include_deleted=True)
        tick.restore()
        await self.session.flush()
        return tick

    async def find_deleted(
        self, *, instrument_id: int | None = None, limit: int = 100, after_id: int | None = None
    ) -> Page[MarketData, int]:
        query = select(MarketData).where(soft_deleted(MarketData)).order_by(MarketData.id)
        if instrument_id is not None:
            query = query.where(MarketData.instrument_id == instrument_id)
        if after_id is not None:
            query = query.where(MarketData.id > after_id)
        query = query.limit(check_limit(limit) + 1).execution_options(**{INCLUDE_DELETED: True})
        return await fetch_page(self.session, query, limit, by_id)


def _in_range(
    query: Select[MarketData], instrument_id: int, start: datetime, end: datetime
) -> Select[MarketData]:
    if end <= start:
        raise ValidationError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    return query.where(
        MarketData.instrument_id == instrument_id,
        MarketData.timestamp >= start,
        MarketData.timestamp < end,
    )


def _by_time(row: MarketData) -> RangeCursor:
    return (row.timestamp, row.id)
