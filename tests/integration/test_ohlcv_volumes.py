"""OHLCV volumes are summed exactly on both engines, past 64 bits too."""

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.models import Instrument, MarketData
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services.validation import MAX_VOLUME

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)


async def test_volumes_past_64_bits_sum_exactly(session_factory: Sessions) -> None:
    volumes = {
        0: [MAX_VOLUME, MAX_VOLUME, MAX_VOLUME],  # 3 * (2**63 - 1): past 2**64
        1: [2**32 - 1, 2**32 + 1, 7, None],  # carries between the halves; a tick without
        2: [None],
    }
    async with session_factory.begin() as session:
        session.add(Instrument(id=1, symbol="AAPL", name="Apple"))
        await session.flush()
        for minute, bar in volumes.items():
            for n, volume in enumerate(bar):
                when = T0 + timedelta(minutes=minute, seconds=n)
                session.add(MarketData(instrument_id=1, timestamp=when, price=2.5, volume=volume))

    async with session_factory() as session:
        bars = await MarketDataRepository(session).ohlcv(1, "1m", T0, T0 + timedelta(hours=1))

    assert [(bar.volume, bar.vwap, bar.ticks) for bar in bars] == [
        (27_670_116_110_564_327_421, 2.5, 3),
        (2**33 + 7, 2.5, 4),
        (0, None, 1),
    ]
    assert bars[0].volume == 3 * MAX_VOLUME


async def test_the_calendars_last_bar_ends_at_its_last_instant(session_factory: Sessions) -> None:
    last_day = datetime(9999, 12, 31, tzinfo=UTC)
    async with session_factory.begin() as session:
        session.add(Instrument(id=1, symbol="AAPL", name="Apple"))
        await session.flush()
        session.add(
            MarketData(instrument_id=1, timestamp=last_day + timedelta(hours=23), price=3.0)
        )

    async with session_factory() as session:
        bars = await MarketDataRepository(session).ohlcv(
            1, "1d", last_day, datetime.max.replace(tzinfo=UTC)
        )

    assert [(bar.start, bar.end, bar.close) for bar in bars] == [
        (last_day, datetime.max.replace(tzinfo=UTC), 3.0)
    ]
