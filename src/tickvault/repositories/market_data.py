"""Market data reads and soft delete: latest tick, time ranges, OHLCV bars.

Every read here leaves soft-deleted rows out (the session's filter) unless asked for.
"""

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, overload

from sqlalchemy import (
    DateTime,
    Select,
    String,
    and_,
    func,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from tickvault.database.partitions import is_partitioned
from tickvault.database.session import INCLUDE_DELETED
from tickvault.database.types import utcnow
from tickvault.errors import ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.monitoring.statements import table_hint
from tickvault.repositories import columns
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

# latest() on a partitioned market_data looks this far back first, in the partitions of
# this window alone (a week: weekends and holidays stay inside it).
RECENT = timedelta(days=7)
# A position in (timestamp, id) order: where the next page of a range starts.
RangeCursor = tuple[datetime, int]
# (A string: SQLAlchemy 2.0's Select takes one type argument, 2.1's one per column.)
AnySelect = TypeVar("AnySelect", bound="Select[*tuple[Any, ...]]")
BATCH_ROWS = 65_536


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
        """The latest tick of each instrument (all, or those given), in instrument order.

        Per instrument, ``ORDER BY timestamp DESC, id DESC LIMIT 1``: one backward probe of
        ix_market_data_instrument_timestamp (instrument_id, timestamp, id), however long ago
        the instrument last traded. SQLite: one query, the ids found by a correlated
        subquery. PostgreSQL: a LATERAL subquery hands back the whole row from the probe; on
        a partitioned market_data (where a lookup by id alone could not prune) first over
        the last ``RECENT``, which reads that window's partitions alone, then over every
        partition for the instruments it did not find.
        """
        dialect = (await self.session.connection()).dialect.name
        if dialect == "sqlite":
            newest = (
                select(MarketData.id)
                .where(MarketData.instrument_id == Instrument.id, MarketData.deleted_at.is_(None))
                .order_by(MarketData.timestamp.desc(), MarketData.id.desc())
                .limit(1)
                .correlate(Instrument)
                .scalar_subquery()
            )
            ids = _of(select(newest).select_from(Instrument), instrument_ids)
            query = (
                select(MarketData)
                .where(MarketData.id.in_(ids))
                # The subquery leaves soft-deleted ticks out itself.
                .execution_options(**{INCLUDE_DELETED: True})
            )
            ticks = list(await self.session.scalars(query))
        else:
            ticks = []
            pending = instrument_ids
            partitioned = await is_partitioned(await self.session.connection())
            for since in (utcnow() - RECENT, None) if partitioned else (None,):
                rows = (await self.session.execute(_newest(pending, since))).all()
                ticks += [tick for _, tick in rows if tick is not None]
                pending = [instrument_id for instrument_id, tick in rows if tick is None]
                if not pending:
                    break
        # One row per instrument: ordered here, so the plan has no sort step at all.
        return sorted(ticks, key=lambda tick: tick.instrument_id)

    @overload
    async def range(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        limit: int = 1000,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
        as_arrow: Literal[False] = False,
    ) -> Page[MarketData, RangeCursor]: ...

    @overload
    async def range(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
        as_arrow: Literal[True],
    ) -> Any: ...

    async def range(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        limit: int = 1000,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
        as_arrow: bool = False,
    ) -> Any:
        """Ticks with ``start <= timestamp < end`` in time order, a page at a time; with
        ``as_arrow=True`` all of them (after ``after``) as one ``pyarrow.Table``::

            table = await repo.range(1, start, end, as_arrow=True)
            frame = tickvault.frames.to_pandas(table)
        """
        if as_arrow:
            batches = self.range_batches(
                instrument_id, start, end, after=after, include_deleted=include_deleted
            )
            pa = columns.arrow()
            return pa.Table.from_batches(
                [batch async for batch in batches], schema=columns.tick_schema()
            )
        query = _in_range(select(MarketData), instrument_id, start, end, after)
        query = (
            query.order_by(MarketData.timestamp, MarketData.id)
            .limit(check_limit(limit) + 1)
            .execution_options(**{INCLUDE_DELETED: include_deleted})
        )
        return await fetch_page(self.session, query, limit, _by_time)

    async def range_batches(
        self,
        instrument_id: int,
        start: datetime,
        end: datetime,
        *,
        after: RangeCursor | None = None,
        include_deleted: bool = False,
        batch_rows: int = BATCH_ROWS,
    ) -> AsyncGenerator[Any, None]:
        """The ticks of ``range`` as Arrow record batches of at most ``batch_rows`` rows, each
        one keyset page read from the database: memory holds one page, however long the
        range. An empty range yields nothing (``columns.tick_schema()`` is the schema)."""
        check_batch(batch_rows)
        # The driver's own tuples (neither ORM objects nor Row objects): the session's
        # connection, its transaction.
        connection = await self.session.connection()
        dialect = connection.dialect.name
        while True:
            query = range_select(
                dialect, instrument_id, start, end, after=after, include_deleted=include_deleted
            )
            rows = await connection.run_sync(_driver_rows, query.limit(batch_rows))
            if not rows:
                return
            yield columns.tick_batch(rows, timestamps_as_text=dialect == "sqlite")
            if len(rows) < batch_rows:
                return
            last = rows[-1]
            after = (columns.stored_instant(last[2]), int(last[0]))

    async def count(self, instrument_id: int, start: datetime, end: datetime) -> int:
        """How many ticks ``range`` gives (soft-deleted ones left out): one index scan."""
        query = _in_range(select(func.count()), instrument_id, start, end).where(
            MarketData.deleted_at.is_(None)
        )
        return int(await self.session.scalar(query) or 0)

    @overload
    async def ohlcv(
        self,
        instrument_id: int,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
        as_arrow: Literal[False] = False,
    ) -> list[Bar]: ...

    @overload
    async def ohlcv(
        self,
        instrument_id: int,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
        as_arrow: Literal[True],
    ) -> Any: ...

    async def ohlcv(
        self,
        instrument_id: int,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
        as_arrow: bool = False,
    ) -> Any:
        """Bars of ``interval`` (1s, 1m, 5m, 15m, 1h, 1d, …) computed in SQL; the first
        ``limit`` of them if given; with ``as_arrow=True`` as a ``pyarrow.Table``."""
        seconds = parse_interval(interval)
        dialect = (await self.session.connection()).dialect.name
        query = ohlcv_query(dialect, instrument_id, seconds, start, end)
        result = await self.session.execute(query if limit is None else query.limit(limit))
        bars = [Bar.from_row(row, seconds) for row in result.mappings()]
        return columns.bar_table(bars) if as_arrow else bars

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


def _newest(
    instrument_ids: Sequence[int] | None, since: datetime | None
) -> "Select[int, MarketData]":
    """(instrument id, its newest live tick at or after ``since``, or None) per instrument,
    by a LATERAL probe (PostgreSQL)."""
    newest = select(MarketData).where(
        MarketData.instrument_id == Instrument.id, MarketData.deleted_at.is_(None)
    )
    if since is not None:
        newest = newest.where(MarketData.timestamp >= since)
    row = newest.order_by(MarketData.timestamp.desc(), MarketData.id.desc()).limit(1).lateral()
    query = (
        select(Instrument.id, aliased(MarketData, row))
        .outerjoin(row, true())
        .prefix_with(table_hint("market_data"))  # not instruments, its first FROM
    )
    # The subquery leaves soft-deleted ticks out itself.
    return _of(query, instrument_ids).execution_options(**{INCLUDE_DELETED: True})


def _of(query: AnySelect, instrument_ids: Sequence[int] | None) -> AnySelect:
    """``query`` over the instruments given (all when None)."""
    if instrument_ids is None:
        return query
    return query.where(Instrument.id.in_(list(instrument_ids)))


def range_select(
    dialect: str,
    instrument_id: int,
    start: datetime,
    end: datetime,
    *,
    after: RangeCursor | None = None,
    include_deleted: bool = False,
) -> Select[Any]:
    """The ticks of ``range`` as a SELECT of ``columns.TICK_COLUMNS`` in (timestamp, id)
    order, the timestamps as the driver returns them (SQLite's text, PostgreSQL's
    timestamptz), for Arrow to read in bulk rather than through UTCDateTime a value at a
    time. ``range_batches`` and the ADBC reads (``repositories.native``) both run it."""
    raw = String() if dialect == "sqlite" else DateTime(timezone=True)
    selected = [
        type_coerce(column, raw) if column.key in ("timestamp", "deleted_at") else column
        for column in (getattr(MarketData, name) for name in columns.TICK_COLUMNS)
    ]
    query = _in_range(select(*selected), instrument_id, start, end, after)
    if not include_deleted:
        query = query.where(MarketData.deleted_at.is_(None))
    return query.order_by(MarketData.timestamp, MarketData.id)


def _in_range(
    query: Select[Any],
    instrument_id: int,
    start: datetime,
    end: datetime,
    after: RangeCursor | None = None,
) -> Select[Any]:
    """Rows with ``start <= timestamp < end``, and after ``after`` in (timestamp, id) order.

    After a cursor, the range's lower bound is the cursor's time itself: given two lower
    bounds on timestamp, SQLite starts the index range at one of them (measured: the
    range's start), so every keyset page walked the index from the range's start and
    reading a range cost pages squared.
    """
    if end <= start:
        raise ValidationError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    lower = start
    if after is not None and after[0].utcoffset() is not None and after[0] > start:
        lower = after[0]
    query = query.where(
        MarketData.instrument_id == instrument_id,
        MarketData.timestamp >= lower,
        MarketData.timestamp < end,
    )
    if after is None:
        return query
    after_ts, after_id = after
    return query.where(
        or_(
            MarketData.timestamp > after_ts,
            and_(MarketData.timestamp == after_ts, MarketData.id > after_id),
        ),
    )


def _driver_rows(connection: Connection, query: Select[Any]) -> list[Any]:
    result = connection.execute(query)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def check_batch(rows: int) -> None:
    if rows < 1:
        raise ValidationError(f"batch_rows must be at least 1, got {rows}")


def _by_time(row: MarketData) -> RangeCursor:
    return (row.timestamp, row.id)
