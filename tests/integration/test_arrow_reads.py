"""Ticks and bars as Arrow tables, pandas and Polars frames, on both engines: the same rows
as the JSON API gives, value for value (prices to 4 decimals, UTC timestamps to the
microsecond), in the same order, soft-deleted ticks left out as there."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.api.schemas import BarOut, TickOut
from tickvault.errors import ValidationError
from tickvault.frames import to_pandas, to_polars
from tickvault.models import Instrument, MarketData
from tickvault.repositories.market_data import MarketDataRepository

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)
START, END = datetime(1960, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")

# (seconds after T0, price, volume, soft-deleted): prices a naive rounding gets wrong,
# stored doubles that print long, three ticks sharing a timestamp, gaps.
TICKS = [
    (0.0, 101.12340000000001, 100, False),
    (0.000001, 3701766.77475, None, False),
    (1.5, 93580.07325, 7, False),
    (1.5, -18137.01365, 0, False),
    (1.5, None, 2**62, False),
    (2.25, 99999999.9999, 5, True),
    (3.0, 1.00005, 3, False),
    (86400.75, 0.00005, 1, False),
]


async def _load(sessions: Sessions) -> list[int]:
    async with sessions.begin() as session:
        session.add_all(
            [Instrument(id=1, symbol="AAPL", name="A"), Instrument(id=2, symbol="B", name="B")]
        )
        await session.flush()
        rows = [
            MarketData(
                instrument_id=1,
                timestamp=T0 + timedelta(seconds=offset),
                price=price,
                bid=None if price is None else price - 0.00015,
                ask=None if price is None else price + 0.000049999,
                volume=volume,
                deleted_at=T0 if deleted else None,
            )
            for offset, price, volume, deleted in TICKS
        ]
        # Before the epoch and in the calendar's last year, and another instrument's tick.
        rows.append(
            MarketData(
                instrument_id=1,
                timestamp=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                price=2.675,
            )
        )
        rows.append(
            MarketData(
                instrument_id=1,
                timestamp=datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
                price=1.23455,
            )
        )
        rows.append(MarketData(instrument_id=2, timestamp=T0, price=5.0))
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]  # fmt: skip


def _json(model: Any) -> dict[str, Any]:
    """A row as the JSON API writes it, read back: times as aware datetimes."""
    row = json.loads(model.model_dump_json())
    for key, value in row.items():
        if isinstance(value, str):
            row[key] = datetime.fromisoformat(value)
    return row


async def _json_range(
    sessions: Sessions, *, include_deleted: bool = False, start: datetime = START
) -> list[dict[str, Any]]:
    rows, cursor = [], None
    async with sessions() as session:
        repo = MarketDataRepository(session)
        while True:
            page = await repo.range(
                1, start, END, limit=3, after=cursor, include_deleted=include_deleted
            )
            rows += [_json(TickOut.model_validate(tick)) for tick in page.items]
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor


async def test_range_as_arrow_is_the_json_range_value_for_value(session_factory: Sessions) -> None:
    await _load(session_factory)
    expected = await _json_range(session_factory)
    async with session_factory() as session:
        table = await MarketDataRepository(session).range(1, START, END, as_arrow=True)
    assert table.schema.field("timestamp").type == UTC_US
    assert table.schema.field("deleted_at").type == UTC_US
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("volume").type == pa.int64()
    assert table.to_pylist() == expected
    assert len(expected) == 9  # every tick of instrument 1 but the soft-deleted one
    prices = table.column("price").to_pylist()
    assert prices == [
        2.675, 101.1234, 3701766.7747, 93580.0733, -18137.0137, None, 1.0001, 0.0001, 1.2346
    ]  # fmt: skip
    times = table.column("timestamp").to_pylist()
    assert times[0] == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert times[2] == T0 + timedelta(microseconds=1)
    assert table.column("volume").to_pylist()[5] == 2**62


async def test_range_batches_are_keyset_pages_that_split_shared_timestamps(
    session_factory: Sessions,
) -> None:
    await _load(session_factory)
    expected = await _json_range(session_factory)
    async with session_factory() as session:
        batches = [
            batch
            async for batch in MarketDataRepository(session).range_batches(
                1, START, END, batch_rows=2
            )
        ]
    # 9 rows in pages of 2: the page boundaries fall inside the three ticks at T0 + 1.5 s.
    assert [batch.num_rows for batch in batches] == [2, 2, 2, 2, 1]
    assert pa.Table.from_batches(batches).to_pylist() == expected


async def test_after_a_cursor_the_table_holds_the_rest(session_factory: Sessions) -> None:
    await _load(session_factory)
    expected = await _json_range(session_factory)
    async with session_factory() as session:
        first = await MarketDataRepository(session).range(1, START, END, limit=4)
        rest = await MarketDataRepository(session).range(
            1, START, END, after=first.next_cursor, as_arrow=True
        )
    assert rest.to_pylist() == expected[4:]


async def test_empty_ranges_are_empty_tables_with_the_schema(session_factory: Sessions) -> None:
    await _load(session_factory)
    async with session_factory() as session:
        repo = MarketDataRepository(session)
        later, after_that = T0 + timedelta(days=3), T0 + timedelta(days=4)
        nothing_then = await repo.range(1, later, after_that, as_arrow=True)
        no_ticks = await repo.range(99, START, END, as_arrow=True)
        no_bars = await repo.ohlcv(1, "1m", later, after_that, as_arrow=True)
        with pytest.raises(ValidationError, match="must be after start"):
            await repo.range(1, T0, T0, as_arrow=True)
    for table in (nothing_then, no_ticks):
        assert table.num_rows == 0
        assert table.column_names == list(TickOut.model_fields)
        assert table.schema.field("timestamp").type == UTC_US
    assert no_bars.num_rows == 0
    assert no_bars.column_names == list(BarOut.model_fields)


async def test_soft_deleted_ticks_only_when_asked_as_in_json(session_factory: Sessions) -> None:
    ids = await _load(session_factory)
    with_deleted = await _json_range(session_factory, include_deleted=True)
    async with session_factory() as session:
        repo = MarketDataRepository(session)
        live = await repo.range(1, START, END, as_arrow=True)
        every = await repo.range(1, START, END, include_deleted=True, as_arrow=True)
        counted = await repo.count(1, START, END)
    assert ids[5] not in live.column("id").to_pylist()
    assert every.to_pylist() == with_deleted
    deleted = [row for row in every.to_pylist() if row["deleted_at"] is not None]
    assert [(row["id"], row["deleted_at"], row["price"]) for row in deleted] == [
        (ids[5], T0, 99999999.9999)
    ]
    assert counted == live.num_rows == 9


async def test_ohlcv_as_arrow_is_the_json_bars(session_factory: Sessions) -> None:
    await _load(session_factory)
    async with session_factory() as session:
        repo = MarketDataRepository(session)
        bars = await repo.ohlcv(1, "1s", START, END)
        table = await repo.ohlcv(1, "1s", START, END, as_arrow=True)
    expected = [_json(BarOut.model_validate(bar)) for bar in bars]
    assert table.to_pylist() == expected
    assert [row["ticks"] for row in expected] == [1, 2, 2, 1, 1, 1]
    assert table.schema.field("start").type == UTC_US
    # T0 + 1 s: -18137.01365 and 93580.07325 (the tick without a price left out).
    assert table.to_pylist()[2]["low"] == -18137.0137


def _plain(value: Any) -> Any:
    """A pandas cell as Python: NA, NaN and NaT as None, a Timestamp as a datetime."""
    if pd.isna(value):
        return None
    return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value


async def test_pandas_and_polars_frames_equal_the_json(session_factory: Sessions) -> None:
    await _load(session_factory)
    expected = await _json_range(session_factory)
    async with session_factory() as session:
        table = await MarketDataRepository(session).range(1, START, END, as_arrow=True)
    frame = to_pandas(table)
    assert str(frame["timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(frame["volume"].dtype) == "Int64"  # whole numbers stay whole beside a gap
    assert str(frame["price"].dtype) == "float64"
    pandas_rows = [
        {key: _plain(value) for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]
    assert pandas_rows == expected
    polars_frame = to_polars(table)
    assert str(polars_frame.schema["timestamp"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert polars_frame.to_dicts() == expected
