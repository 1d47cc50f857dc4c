"""MarketDataRepository on both engines: latest, range and OHLCV against the same figures
computed in Python on the same rows, and soft-deleted ticks left out of every read."""

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import NotFoundError, ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.repositories.market_data import MarketDataRepository

T0 = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]

ticks_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "instrument_id": st.integers(1, 3),
            "timestamp": st.integers(0, 600_000_000).map(
                lambda us: T0 + timedelta(microseconds=us)
            ),
            "price": st.one_of(st.none(), st.integers(1, 10**8).map(lambda p: p / 10_000)),
            "volume": st.one_of(st.none(), st.integers(0, 10**6)),
            "deleted": st.booleans(),
        }
    ),
    max_size=60,
)


async def _load(url: str, ticks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM market_data"))
            await connection.execute(text("DELETE FROM instruments"))
            await connection.execute(
                insert(Instrument),
                [{"id": i, "symbol": f"S{i}", "name": f"S{i}"} for i in (1, 2, 3)],
            )
        stored = []
        async with create_session_factory(engine).begin() as session:
            for tick in ticks:
                row = MarketData(
                    instrument_id=tick["instrument_id"],
                    timestamp=tick["timestamp"],
                    price=tick["price"],
                    volume=tick["volume"],
                    deleted_at=T0 if tick["deleted"] else None,
                )
                session.add(row)
                await session.flush()
                stored.append({**tick, "id": row.id})
        return stored
    finally:
        await engine.dispose()


async def _read(url: str, work: Any) -> Any:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            return await work(MarketDataRepository(session))
    finally:
        await engine.dispose()


def _expected_bars(ticks: list[dict[str, Any]], instrument_id: int, seconds: int) -> list[tuple]:
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for t in sorted(ticks, key=lambda t: (t["timestamp"], t["id"])):
        if t["instrument_id"] == instrument_id and t["price"] is not None and not t["deleted"]:
            buckets[int(t["timestamp"].timestamp()) // seconds * seconds].append(t)
    bars = []
    for start, group in sorted(buckets.items()):
        prices = [t["price"] for t in group]
        volumes = [t["volume"] for t in group if t["volume"] is not None]
        traded = sum(volumes)
        weighted = sum(t["price"] * t["volume"] for t in group if t["volume"] is not None)
        bars.append(
            (
                start,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                traded,
                round(weighted / traded, 6) if traded else None,
                len(group),
            )
        )
    return bars


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ticks=ticks_strategy)
def test_latest_range_and_bars_match_python(head_url: str, ticks: list[dict[str, Any]]) -> None:
    stored = asyncio.run(_load(head_url, ticks))
    live = [t for t in stored if not t["deleted"]]
    order = lambda t: (t["timestamp"], t["id"])  # noqa: E731

    latest = asyncio.run(_read(head_url, lambda r: r.latest()))
    expected_latest = {}
    for t in sorted(live, key=order):
        expected_latest[t["instrument_id"]] = t["id"]
    assert {t.instrument_id: t.id for t in latest} == expected_latest
    only_two = asyncio.run(_read(head_url, lambda r: r.latest([2])))
    assert [t.id for t in only_two] == ([expected_latest[2]] if 2 in expected_latest else [])

    start, end = T0 + timedelta(seconds=60), T0 + timedelta(seconds=500)

    async def all_pages(repo: MarketDataRepository) -> list[int]:
        ids, cursor = [], None
        while True:
            page = await repo.range(1, start, end, limit=7, after=cursor)
            ids += [t.id for t in page.items]
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    expected_range = [
        t["id"]
        for t in sorted(live, key=order)
        if t["instrument_id"] == 1 and start <= t["timestamp"] < end
    ]
    assert asyncio.run(_read(head_url, all_pages)) == expected_range

    for interval, seconds in (("1m", 60), ("5m", 300)):
        bars = asyncio.run(
            _read(head_url, lambda r, i=interval: r.ohlcv(1, i, T0, T0 + timedelta(minutes=11)))
        )
        got = [
            (
                int(b.start.timestamp()),
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                round(b.vwap, 6) if b.vwap is not None else None,
                b.ticks,
            )
            for b in bars
        ]
        assert got == _expected_bars(stored, 1, seconds)


async def _instrument_with_ticks(sessions: Sessions) -> list[int]:
    async with sessions.begin() as session:
        aapl = Instrument(symbol="AAPL", name="Apple")
        ticks = [
            MarketData(
                instrument=aapl, timestamp=T0 + timedelta(seconds=i), price=190.0 + i, volume=100
            )
            for i in range(4)
        ]
        session.add_all([aapl, *ticks])
    return [t.id for t in ticks]


async def test_soft_deleted_ticks_are_left_out_of_every_read(session_factory: Sessions) -> None:
    ids = await _instrument_with_ticks(session_factory)
    async with session_factory.begin() as session:
        await MarketDataRepository(session).soft_delete(ids[-1])
        await MarketDataRepository(session).soft_delete(ids[-1])  # idempotent

    async with session_factory() as session:
        repo = MarketDataRepository(session)
        assert [t.id for t in await repo.latest()] == [ids[2]]
        page = await repo.range(1, T0, T0 + timedelta(hours=1))
        assert [t.id for t in page.items] == ids[:3]
        assert [t.id for t in await repo.get_active_records(1)] == ids[:3]
        bars = await repo.ohlcv(1, "1h", T0, T0 + timedelta(hours=1))
        assert (bars[0].ticks, bars[0].close) == (3, 192.0)
        with pytest.raises(NotFoundError, match=f"tick {ids[-1]} not found"):
            await repo.get(ids[-1])
        # The explicit opt-ins.
        assert (await repo.get(ids[-1], include_deleted=True)).is_deleted
        everything = await repo.range(1, T0, T0 + timedelta(hours=1), include_deleted=True)
        assert [t.id for t in everything.items] == ids
        assert [t.id for t in (await repo.find_deleted()).items] == [ids[-1]]

    async with session_factory.begin() as session:
        restored = await MarketDataRepository(session).restore(ids[-1])
        assert restored.is_active
    async with session_factory() as session:
        assert [t.id for t in await MarketDataRepository(session).latest()] == [ids[-1]]


async def test_get_active_records_loads_the_instrument(session_factory: Sessions) -> None:
    ids = await _instrument_with_ticks(session_factory)
    async with session_factory.begin() as session:
        await MarketDataRepository(session).soft_delete(ids[0])

    async with session_factory() as session:
        records = await MarketDataRepository(session).get_active_records(instrument_id=1)
    # Read after the session closed: the instrument was loaded eagerly.
    assert [(r.id, r.instrument.symbol) for r in records] == [(i, "AAPL") for i in ids[1:]]


async def test_bad_read_arguments_get_clear_errors(session_factory: Sessions) -> None:
    async with session_factory() as session:
        repo = MarketDataRepository(session)
        with pytest.raises(ValidationError, match="interval '7x' not understood"):
            await repo.ohlcv(1, "7x", T0, T0 + timedelta(hours=1))
        with pytest.raises(ValidationError, match="must be after start"):
            await repo.range(1, T0, T0)
        with pytest.raises(ValidationError, match="limit must be between 1 and 10000"):
            await repo.range(1, T0, T0 + timedelta(hours=1), limit=0)


@pytest.mark.parametrize(
    ("interval", "starts"),
    [
        ("1m", [datetime(1969, 12, 31, 23, 59, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]),
        ("1h", [datetime(1969, 12, 31, 23, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]),
        ("1d", [datetime(1969, 12, 31, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]),
    ],
)
async def test_bars_across_the_epoch_start_where_their_ticks_are(
    session_factory: Sessions, interval: str, starts: list[datetime]
) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    async with session_factory.begin() as session:
        session.add(Instrument(id=1, symbol="OLD", name="old"))
        await session.flush()
        for offset, price in ((-1.5, 10.0), (-0.5, 11.0), (0.5, 12.0)):
            when = epoch + timedelta(seconds=offset)
            session.add(MarketData(instrument_id=1, timestamp=when, price=price, volume=1))
    async with session_factory() as session:
        bars = await MarketDataRepository(session).ohlcv(
            1, interval, epoch - timedelta(days=1), epoch + timedelta(days=1)
        )
    assert [(bar.start, bar.open, bar.close, bar.ticks) for bar in bars] == [
        (starts[0], 10.0, 11.0, 2),
        (starts[1], 12.0, 12.0, 1),
    ]


async def test_a_tick_in_a_bars_last_microseconds_is_in_that_bar(session_factory: Sessions) -> None:
    """SQLite's strftime('%s') rounds to the millisecond: 13:30:59.9996 became 13:31:00."""
    minute = datetime(2024, 3, 4, 14, 4, tzinfo=UTC)
    async with session_factory.begin() as session:
        session.add(Instrument(id=1, symbol="EDGE", name="edge"))
        await session.flush()
        for micro, price in ((999_400, 10.0), (999_600, 11.0), (999_999, 12.0), (1_000_000, 13.0)):
            when = minute + timedelta(seconds=59, microseconds=micro)
            session.add(MarketData(instrument_id=1, timestamp=when, price=price, volume=1))
    async with session_factory() as session:
        bars = await MarketDataRepository(session).ohlcv(
            1, "1m", minute, minute + timedelta(minutes=2)
        )
    assert [(bar.start, bar.open, bar.close, bar.ticks) for bar in bars] == [
        (minute, 10.0, 12.0, 3),
        (minute + timedelta(minutes=1), 13.0, 13.0, 1),
    ]
