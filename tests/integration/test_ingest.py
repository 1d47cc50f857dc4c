"""MarketDataService on both engines: single ticks, bulk ingest with bad rows, a batch the
database refuses, inactive instruments."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.errors import LoadInProgress, ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService

T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def service(session_factory: Sessions) -> MarketDataService:
    async with session_factory.begin() as session:
        session.add_all(
            [
                Instrument(symbol="AAPL", name="Apple"),
                Instrument(symbol="MSFT", name="Microsoft"),
                Instrument(symbol="DEAD", name="Delisted", is_active=False),
            ]
        )
    return MarketDataService(session_factory)


async def _stored(sessions: Sessions) -> list[tuple[Any, ...]]:
    """In time order: on PostgreSQL two batches are written at once, so the ids of
    different batches may interleave."""
    async with sessions() as session:
        rows = await session.execute(
            select(
                MarketData.instrument_id, MarketData.timestamp, MarketData.price, MarketData.volume
            ).order_by(MarketData.timestamp, MarketData.id)
        )
        return [tuple(r) for r in rows]


def _good(i: int) -> dict[str, Any]:
    return {
        "symbol": "AAPL" if i % 2 else "MSFT",
        "timestamp": T0 + timedelta(seconds=i),
        "price": 100 + i / 100,
        "bid": 99.99,
        "ask": 100.01,
        "volume": i,
    }


BAD_ROWS = [
    ({"symbol": "ZZZZ", "timestamp": T0, "price": 1}, "unknown instrument symbol 'ZZZZ'"),
    ({"instrument_id": 999, "timestamp": T0}, "unknown instrument 999"),
    ({"instrument_id": "x1", "timestamp": T0}, "instrument_id 'x1' is not an integer"),
    ({"timestamp": T0, "price": 1}, "no instrument: give instrument_id or symbol"),
    ({"symbol": "DEAD", "timestamp": T0, "price": 1}, "instrument 3 is inactive"),
    ({"symbol": "AAPL", "price": 1}, "timestamp is missing"),
    ({"symbol": "AAPL", "timestamp": "yesterday"}, "timestamp 'yesterday' is not an ISO 8601"),
    # A quoted field holding a timestamp and a price: Python's parser would drop ",219".
    (
        {"symbol": "AAPL", "timestamp": "2024-08-01T09:00:02Z,219"},
        "timestamp '2024-08-01T09:00:02Z,219' is not an ISO 8601 date and time",
    ),
    (
        {"symbol": "AAPL", "timestamp": "2024-08-01T09:00:02+01:00:30"},
        "timestamp '2024-08-01T09:00:02+01:00:30' is not an ISO 8601 date and time",
    ),
    ({"symbol": "AAPL", "timestamp": datetime(2024, 1, 1)}, "has no time zone"),
    ({"symbol": "AAPL", "timestamp": T0, "price": "abc"}, "price 'abc' is not a number"),
    ({"symbol": "AAPL", "timestamp": T0, "bid": float("inf")}, "bid inf is not finite"),
    ({"symbol": "AAPL", "timestamp": T0, "ask": float("nan")}, "ask nan is not finite"),
    ({"symbol": "AAPL", "timestamp": T0, "price": 100_000_000}, "outside ±99,999,999.9999"),
    (
        {"symbol": "AAPL", "timestamp": T0, "high_price": 1, "low_price": 2},
        "high_price 1.0 is below low_price 2.0",
    ),
    ({"symbol": "AAPL", "timestamp": T0, "volume": -5}, "volume -5 is negative"),
    ({"symbol": "AAPL", "timestamp": T0, "volume": 1.5}, "volume 1.5 is not a whole number"),
]


async def test_bad_rows_are_refused_with_position_and_reason_and_good_rows_stored(
    service: MarketDataService, session_factory: Sessions
) -> None:
    rows: list[dict[str, Any]] = []
    count = 4 * len(BAD_ROWS)  # a bad row in every fourth place
    expected_rejections = []
    for i in range(count):
        if i % 4 == 1 and (i // 4) < len(BAD_ROWS):
            bad, reason = BAD_ROWS[i // 4]
            expected_rejections.append((i, reason))
            rows.append(bad)
        else:
            rows.append(_good(i))

    report = await service.ingest(rows, batch_size=7)

    assert (report.accepted, report.rejected) == (count - len(BAD_ROWS), len(BAD_ROWS))
    assert [r.position for r in report.rejections] == [p for p, _ in expected_rejections]
    for rejection, (_, reason) in zip(report.rejections, expected_rejections, strict=True):
        assert reason in rejection.reason
    assert report.failed_batches == []
    stored = await _stored(session_factory)
    good = [_good(i) for i in range(count) if i not in dict(expected_rejections)]
    assert [(r[1], r[2], r[3]) for r in stored] == [
        (g["timestamp"], g["price"], g["volume"]) for g in good
    ]


async def test_ingest_takes_async_iterables_and_strings_from_files(
    service: MarketDataService, session_factory: Sessions
) -> None:
    async def feed() -> AsyncIterator[dict[str, Any]]:
        for i in range(25):
            yield {
                "instrument_id": "1",
                "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
                "price": f"{100 + i}.25",
                "volume": str(i),
                "bid": "",
            }

    report = await service.ingest(feed(), batch_size=10)

    assert (report.accepted, report.rejected, report.batches) == (25, 0, 3)
    stored = await _stored(session_factory)
    assert stored[-1] == (1, T0 + timedelta(seconds=24), 124.25, 24)


async def test_the_first_10_000_rejections_are_kept_and_every_one_counted(
    service: MarketDataService, session_factory: Sessions
) -> None:
    good_at = {0, 5_000, 10_009}
    rows = [
        _good(i) if i in good_at else {"symbol": f"Z{i}", "timestamp": T0, "price": 1.0}
        for i in range(10_010)
    ]

    report = await service.ingest(rows, batch_size=1_000)

    assert (report.accepted, report.rejected) == (3, 10_007)
    bad_at = [i for i in range(10_010) if i not in good_at]
    assert [(r.position, r.reason) for r in report.rejections] == [
        (i, f"unknown instrument symbol 'Z{i}'") for i in bad_at[:10_000]
    ]
    assert [(r[1], r[2]) for r in await _stored(session_factory)] == [
        (_good(i)["timestamp"], _good(i)["price"]) for i in sorted(good_at)
    ]


async def test_a_batch_the_database_refuses_leaves_none_of_its_rows(
    service: MarketDataService, session_factory: Sessions, engine: AsyncEngine
) -> None:
    async with session_factory.begin() as session:
        gone = Instrument(symbol="GONE", name="Removed during the load")
        session.add(gone)
    gone_id = gone.id

    async def feed() -> AsyncIterator[dict[str, Any]]:
        for i in range(30):
            if i == 10:
                # Another process removes the instrument after validation knew it.
                async with engine.begin() as connection:
                    await connection.execute(
                        text("DELETE FROM instruments WHERE id = :id"), {"id": gone_id}
                    )
            symbol = "GONE" if i == 15 else "AAPL"
            yield {"symbol": symbol, "timestamp": T0 + timedelta(seconds=i), "price": 1.0 + i}

    report = await service.ingest(feed(), batch_size=10)

    assert (report.accepted, report.rejected, report.batches) == (20, 10, 3)
    [failure] = report.failed_batches
    assert (failure.first_position, failure.last_position, failure.rows) == (10, 19, 10)
    assert "foreign key" in failure.reason.lower()
    prices = sorted(r[2] for r in await _stored(session_factory))
    assert prices == [1.0 + i for i in (*range(10), *range(20, 30))]


async def test_insert_market_data_validates_and_returns_the_stored_tick(
    service: MarketDataService, session_factory: Sessions
) -> None:
    tick = await service.insert_market_data(
        {"symbol": "MSFT", "timestamp": T0, "price": 410.5, "volume": 300}
    )
    assert tick.id is not None
    assert (tick.instrument_id, tick.price, tick.timestamp) == (2, 410.5, T0)

    for bad, reason in BAD_ROWS:
        with pytest.raises(ValidationError) as caught:
            await service.insert_market_data(bad)
        assert reason in str(caught.value)
    assert len(await _stored(session_factory)) == 1


async def test_the_monitor_sees_every_ingested_row_once(
    service: MarketDataService, engine: AsyncEngine
) -> None:
    monitor = DatabasePerformanceMonitor(engine)
    try:
        await monitor.collect_metrics()
        await service.ingest([_good(i) for i in range(2500)], batch_size=1000)
        metrics = await monitor.collect_metrics()
    finally:
        monitor.uninstrument()
    assert metrics.by_table["market_data"]
    inserted = sum(
        entry["rows"]
        for kind, entry in metrics.by_table["market_data"].items()
        if kind in ("INSERT", "COPY")
    )
    assert inserted == 2500
    expected_kind = "COPY" if engine.dialect.name == "postgresql" else "INSERT"
    assert metrics.by_table["market_data"][expected_kind]["count"] == 3


async def test_the_monitor_sees_a_keyed_load_move_its_receipt(
    service: MarketDataService, engine: AsyncEngine
) -> None:
    """Each batch moves the receipt in its own transaction (on PostgreSQL beside the COPY, on
    the driver's connection): the monitor counts every move, as it counts the rows."""
    monitor = DatabasePerformanceMonitor(engine)
    try:
        await monitor.collect_metrics()
        await service.ingest([_good(i) for i in range(2500)], batch_size=1000, source_key="m")
        metrics = await monitor.collect_metrics()
    finally:
        monitor.uninstrument()
    # One move per batch, and the last marking the load done.
    assert metrics.by_table["write_receipts"]["UPDATE"]["count"] == 4


async def test_bad_batch_size_is_refused(service: MarketDataService) -> None:
    with pytest.raises(ValidationError, match="batch_size must be between"):
        await service.ingest([], batch_size=0)
    async with service.session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(MarketData)) == 0


async def test_concurrent_single_tick_writers_all_land_without_database_is_locked(
    service: MarketDataService, session_factory: Sessions
) -> None:
    """16 writers at once, each tick read-checked and written by one INSERT … SELECT: on
    SQLite a deferred transaction would now and then fail at once with "database is locked"
    (its read snapshot outdated by another writer); every acknowledged tick must be stored."""
    async with session_factory.begin() as session:
        session.add_all(Instrument(symbol=f"W{i}", name=f"W{i}") for i in range(4))
    async with session_factory() as session:
        ids = list(await session.scalars(select(Instrument.id).where(Instrument.symbol.like("W%"))))

    async def writer(w: int) -> int:
        for n in range(60):
            await service.insert_market_data(
                {
                    "instrument_id": ids[n % len(ids)],
                    "timestamp": T0 + timedelta(microseconds=w * 1000 + n),
                    "price": 100.0 + n,
                }
            )
        return 60

    acknowledged = sum(await asyncio.gather(*(writer(w) for w in range(16))))
    async with session_factory() as session:
        stored = await session.scalar(
            select(func.count()).select_from(MarketData).where(MarketData.instrument_id.in_(ids))
        )
    assert stored == acknowledged == 16 * 60


class SourceBroke(Exception):
    """The input failed mid-load (a network file, a crashed producer)."""


async def test_a_keyed_load_resumes_after_its_last_commit_and_runs_once(
    service: MarketDataService, session_factory: Sessions
) -> None:
    rows = [BAD_ROWS[0][0] if i % 9 == 4 else _good(i) for i in range(950)]
    good = [(r["timestamp"], r["price"], r["volume"]) for r in rows if "volume" in r]

    async def breaking(after: int) -> AsyncIterator[dict[str, Any]]:
        for i, row in enumerate(rows):
            if i == after:
                raise SourceBroke
            yield row

    with pytest.raises(SourceBroke):
        await service.ingest(breaking(after=470), batch_size=10, source_key="feed-1")
    first = await _stored(session_factory)
    assert 0 < len(first) < len(good)  # committed batches stay; the rest did not commit

    report = await service.ingest(rows, batch_size=10, source_key="feed-1")

    assert report.resumed_from > 0
    assert report.receipt is not None
    assert report.receipt.rows_consumed == report.resumed_from
    assert report.receipt.rows_stored == len(first)
    assert [(r[1], r[2], r[3]) for r in await _stored(session_factory)] == good
    # Refused rows of this run only, at their positions in the whole input.
    assert [r.position for r in report.rejections] == [
        i for i in range(report.resumed_from, 950) if i % 9 == 4
    ]

    again = await service.ingest(rows, batch_size=10, source_key="feed-1")
    assert again.already_loaded
    assert (again.accepted, again.rejected, again.batches) == (0, 0, 0)
    assert again.receipt is not None
    assert again.receipt.rows_stored == len(good)
    assert len(await _stored(session_factory)) == len(good)

    forced = await service.ingest(rows, batch_size=10, source_key="feed-1", force=True)
    assert (forced.resumed_from, forced.accepted) == (0, len(good))
    assert len(await _stored(session_factory)) == 2 * len(good)
    # Another key is another load.
    other = await service.ingest(rows[:3], source_key="feed-2")
    assert other.accepted == 3


async def test_a_keyed_load_stops_when_another_moves_its_receipt(
    service: MarketDataService, session_factory: Sessions, engine: AsyncEngine
) -> None:
    rows = [_good(i) for i in range(400)]

    async def feed() -> AsyncIterator[dict[str, Any]]:
        for i, row in enumerate(rows):
            if i == 250:
                # Another load of the same input committed a batch meanwhile.
                async with engine.begin() as connection:
                    await connection.execute(
                        text(
                            "UPDATE write_receipts SET rows_consumed = rows_consumed + 1000 "
                            "WHERE key = 'k'"
                        )
                    )
            yield row

    with pytest.raises(LoadInProgress, match="another load of the same input"):
        await service.ingest(feed(), batch_size=10, source_key="k")
    stored = await _stored(session_factory)
    async with session_factory() as session:
        receipt = await session.execute(
            text("SELECT rows_consumed, rows_stored, done FROM write_receipts WHERE key = 'k'")
        )
    consumed, stored_by_receipt, done = receipt.one()
    # Whole batches, each counted on the receipt in its own transaction; none after the
    # other load moved it.
    assert len(stored) % 10 == 0
    assert len(stored) < 250
    assert (consumed, stored_by_receipt, bool(done)) == (len(stored) + 1000, len(stored), False)
