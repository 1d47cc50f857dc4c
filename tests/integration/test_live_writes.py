"""The live write path on both engines, small batches and large: many producers' single
ticks share commits, every acknowledged tick is stored once and in its producer's order,
alert logs come out as if the ticks had arrived one by one, a tick the database refuses
fails alone, and a full queue refuses instead of growing."""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database import live as live_module
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import DatabaseUnavailable, TickRefused, WriteQueueFull
from tickvault.models import AlertLog, AlertRule, Instrument, MarketData
from tickvault.services import writer as writer_module
from tickvault.services.alerts import AlertService
from tickvault.services.market_data import IdempotencyKey, MarketDataService

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
PRODUCERS = 12
TICKS_EACH = 40
RULES = [  # condition, threshold, cooldown seconds
    ("price_above", 104, 30),
    ("price_below", 96, 0),
    ("pct_change_above", 3, 10),
    ("pct_change_below", -3, 10),
    ("volume_above", 900, 60),
]


async def add_instruments(sessions: Sessions, symbols: list[str]) -> list[int]:
    async with sessions.begin() as session:
        instruments = [Instrument(symbol=s, name=s) for s in symbols]
        session.add_all(instruments)
        for instrument in instruments:
            session.add_all(
                AlertRule(
                    name=f"{instrument.symbol} {c}",
                    instrument=instrument,
                    condition=c,
                    threshold=t,
                    cooldown_seconds=cd,
                )
                for c, t, cd in RULES
            )
    return [instrument.id for instrument in instruments]


def at(instrument_id: int, second: int, price: float) -> dict[str, Any]:
    return {
        "instrument_id": instrument_id,
        "timestamp": T0 + timedelta(seconds=second),
        "price": price,
    }


def producer_ticks(producer: int, instrument_id: int) -> list[dict[str, Any]]:
    """A zig-zag around 100 that crosses every rule's threshold, one second apart."""
    return [
        {
            "instrument_id": instrument_id,
            "timestamp": T0 + timedelta(seconds=n, microseconds=producer),
            "price": 100 + ((n * 7 + producer) % 13) - 6.0,
            "volume": (n * 97 + producer * 31) % 1000,
        }
        for n in range(TICKS_EACH)
    ]


@pytest.fixture(autouse=True, params=["small batches", "large batches"])
def batch_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test on both of each engine's ways of writing a batch: with the thresholds at
    their least, every batch takes the large batches' way (PostgreSQL: COPY in a
    transaction instead of one statement; SQLite: the writer's thread instead of the
    event loop)."""
    if request.param == "large batches":
        monkeypatch.setattr(live_module, "COPY_MIN_TICKS", 1)
        monkeypatch.setattr(live_module, "ON_LOOP_MAX_TICKS", 0)


@pytest.fixture
async def service(session_factory: Sessions) -> AsyncIterator[MarketDataService]:
    async with MarketDataService(session_factory, alerts=AlertService(session_factory)) as service:
        yield service


def alert_rows(logs: list[AlertLog], rule_names: dict[int, str]) -> list[tuple[Any, ...]]:
    return [
        (rule_names[log.rule_id], log.timestamp, log.fired_status, log.trigger_value)
        for log in logs
    ]


async def read_alerts(sessions: Sessions) -> list[tuple[Any, ...]]:
    async with sessions() as session:
        names = dict((await session.execute(select(AlertRule.id, AlertRule.name))).all())
        logs = (await session.scalars(select(AlertLog).order_by(AlertLog.id))).all()
    return alert_rows(list(logs), names)


async def test_concurrent_producers_share_commits_and_lose_nothing(
    service: MarketDataService, session_factory: Sessions, twin_head_url: str
) -> None:
    ids = await add_instruments(session_factory, ["AAA", "BBB", "CCC"])
    feeds = [producer_ticks(p, ids[p % len(ids)]) for p in range(PRODUCERS)]
    acknowledged: list[list[MarketData]] = [[] for _ in range(PRODUCERS)]

    async def produce(p: int) -> None:
        for tick in feeds[p]:
            acknowledged[p].append(await service.insert_market_data(tick))

    await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))

    async with session_factory() as session:
        stored = {t.id: t for t in (await session.scalars(select(MarketData))).all()}
    all_acks = [tick for acks in acknowledged for tick in acks]
    assert len(stored) == len(all_acks) == PRODUCERS * TICKS_EACH
    assert sorted(stored) == sorted(t.id for t in all_acks)  # each stored once, by its id
    for p, acks in enumerate(acknowledged):
        # Each producer's ticks were committed in the order it sent them.
        assert [t.id for t in acks] == sorted(t.id for t in acks)
        for tick, sent in zip(acks, feeds[p], strict=True):
            row = stored[tick.id]
            assert (row.instrument_id, row.timestamp, row.price, row.volume) == (
                sent["instrument_id"],
                sent["timestamp"],
                sent["price"],
                sent["volume"],
            )
    assert service.writer.committed == len(all_acks)
    assert service.writer.batches < len(all_acks)  # commits were shared

    # The same ticks, in the order they were stored, fed one by one into a fresh database
    # through a fresh service must give the very same alert log.
    engine = create_engine(twin_head_url)
    try:
        sessions = create_session_factory(engine)
        await add_instruments(sessions, ["AAA", "BBB", "CCC"])
        async with MarketDataService(sessions, alerts=AlertService(sessions)) as single:
            for tick_id in sorted(stored):
                row = stored[tick_id]
                await single.insert_market_data(
                    {
                        "instrument_id": row.instrument_id,
                        "timestamp": row.timestamp,
                        "price": row.price,
                        "volume": row.volume,
                    }
                )
        expected = await read_alerts(sessions)
    finally:
        await engine.dispose()
    got = await read_alerts(session_factory)
    assert len(expected) > 50  # the feed crosses every threshold many times
    assert got == expected


@contextlib.asynccontextmanager
async def holding_write_lock(url: str) -> AsyncIterator[None]:
    """Another connection holds the write lock on market_data for the block."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    locker = create_engine(url)
    try:
        async with locker.connect() as session:
            await session.execute(text("LOCK TABLE market_data IN EXCLUSIVE MODE"))
            yield
            await session.rollback()
    finally:
        await locker.dispose()


REFUSE_666 = {
    "sqlite": [
        "CREATE TRIGGER refuse_666 BEFORE INSERT ON market_data WHEN NEW.price = 666 "
        "BEGIN SELECT RAISE(ABORT, 'price 666 refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.price = 666 THEN PERFORM pg_sleep(PAUSE); "
        "RAISE EXCEPTION 'price 666 refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_666 BEFORE INSERT ON market_data "
        "FOR EACH ROW EXECUTE FUNCTION refuse_666()",
    ],
}


async def refuse_666(engine: AsyncEngine, pause: float = 0) -> None:
    """A trigger of the test's own: the database refuses any tick priced 666 (on
    PostgreSQL after ``pause`` seconds)."""
    async with engine.begin() as connection:
        for statement in REFUSE_666[engine.dialect.name]:
            await connection.execute(text(statement.replace("PAUSE", str(pause))))


@pytest.mark.parametrize("requests", ["one request", "a request per tick"])
async def test_a_tick_the_database_refuses_fails_alone_and_leaves_no_alert_state(
    service: MarketDataService,
    session_factory: Sessions,
    engine: AsyncEngine,
    requests: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [instrument_id] = await add_instruments(session_factory, ["AAA"])
    # Refused slowly (PostgreSQL): the batch behind it is surely started meanwhile.
    await refuse_666(engine, pause=0.3)

    def tick(n: int, price: float) -> dict[str, Any]:
        return {
            "instrument_id": instrument_id,
            "timestamp": T0 + timedelta(seconds=n),
            "price": price,
        }

    prices = [100.0, 101.0, 102.0, 666.0, 100.0, 101.5, 99.0, 98.5]
    ticks = [tick(n, p) for n, p in enumerate(prices)]
    if requests == "one request":
        report = await service.store(ticks)
        ids = report.ids
        rejections = [(r.position, r.reason) for r in report.rejections]
    else:
        # All queued before the writer takes any: on PostgreSQL it writes the first half
        # and prepares the second half behind it (from 2 ticks queued here, 256
        # otherwise). That second half was evaluated after 666 (the previous price of its
        # first tick: a -85 % change), so it must not be sent, and be evaluated again once
        # 666 is refused.
        monkeypatch.setattr(writer_module, "PIPELINE_MIN_TICKS", 2)
        pending = [await service.submit([one]) for one in ticks]
        reports = [await answer for answer in pending]
        ids = [id_ for one in reports for id_ in one.ids]
        rejections = [(n, r.reason) for n, one in enumerate(reports) for r in one.rejections]

    assert [position for position, _ in rejections] == [3]
    assert "the database refused the tick" in rejections[0][1]
    assert "price 666 refused" in rejections[0][1]
    async with session_factory() as session:
        stored = (await session.scalars(select(MarketData).order_by(MarketData.id))).all()
    assert [t.id for t in stored] == ids
    assert [t.price for t in stored] == [p for p in prices if p != 666]
    assert await read_alerts(session_factory) == []

    # Alone, through insert_market_data: refused with the database's reason.
    with pytest.raises(TickRefused, match="price 666 refused"):
        await service.insert_market_data(tick(20, 666.0))
    # The refused ticks never counted: 666 would have fired price_above 104 and been the
    # previous price of the next tick (a -85 % change).
    await service.insert_market_data(tick(21, 97.5))
    rows = await read_alerts(session_factory)
    assert [(name, status, value) for name, _, status, value in rows] == []


async def test_after_a_bug_in_the_writer_every_request_is_answered_as_it_ended(
    service: MarketDataService,
    session_factory: Sessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch whose preparation raises something unforeseen: its requests get an error and
    nothing of it is stored; on PostgreSQL, the batch already sent before it is stored and
    answered with its ids; the writer goes on."""
    [instrument_id] = await add_instruments(session_factory, ["AAA"])
    assert service.alerts is not None
    prepare = service.alerts.prepare

    async def buggy(records: Any) -> Any:
        if any(record[2] == 13.0 for record in records):
            raise RuntimeError("a bug")
        return await prepare(records)

    monkeypatch.setattr(service.alerts, "prepare", buggy)
    monkeypatch.setattr(writer_module, "PIPELINE_MIN_TICKS", 2)
    prices = [100.0, 101.0, 102.0, 103.0, 100.0, 101.0, 13.0, 98.5]
    pending = [await service.submit([at(instrument_id, n, p)]) for n, p in enumerate(prices)]
    answers: list[Any] = []
    for one in pending:
        try:
            answers.append((await one).ids[0])
        except Exception as exc:
            answers.append(str(exc))
    async with session_factory() as session:
        stored = (await session.scalars(select(MarketData.id).order_by(MarketData.id))).all()
    # SQLite writes the 8 in one batch; PostgreSQL the first 4 while it prepares the rest.
    sent = 4 if service.engine.dialect.name == "postgresql" else 0
    assert list(stored) == answers[:sent]
    assert answers[sent:] == ["the write failed: RuntimeError('a bug')"] * (8 - sent)
    later = await service.insert_market_data(at(instrument_id, 20, 100.0))
    async with session_factory() as session:
        assert await session.get(MarketData, later.id) is not None


async def test_a_full_queue_refuses_at_once_and_stores_what_it_took(
    session_factory: Sessions, head_url: str
) -> None:
    [instrument_id] = await add_instruments(session_factory, ["AAA"])

    def tick(n: int) -> dict[str, Any]:
        return {
            "instrument_id": instrument_id,
            "timestamp": T0 + timedelta(seconds=n),
            "price": 100.0,
        }

    async with MarketDataService(session_factory, queue_capacity=10) as service:
        # Another connection holds the write lock, so the writer's first batch waits.
        async with holding_write_lock(head_url):
            first = await service.submit([tick(0)])
            await asyncio.sleep(0.2)  # the writer has taken it and waits for the lock
            # The queue counts ticks until their commit: 1 in the waiting batch, 9 more.
            queued = await service.submit([tick(n) for n in range(1, 10)], wait=False)
            assert service.writer.queued == 10
            with pytest.raises(WriteQueueFull, match="the write queue is full"):
                await service.submit([tick(10)], wait=False)
        assert len((await first).ids) == 1
        assert len((await queued).ids) == 9
    async with session_factory() as session:
        count = len((await session.scalars(select(MarketData.id))).all())
    assert count == 10


async def test_closing_commits_what_is_queued_and_refuses_what_comes_after(
    session_factory: Sessions, head_url: str
) -> None:
    [instrument_id] = await add_instruments(session_factory, ["AAA"])
    service = MarketDataService(session_factory)
    async with holding_write_lock(head_url):
        pending = [await service.submit([at(instrument_id, n, 100.0)]) for n in range(5)]
        closing = asyncio.create_task(service.aclose())
        await asyncio.sleep(0.1)
        assert not closing.done()  # it waits for the queue to be written
        with pytest.raises(DatabaseUnavailable, match="shutting down"):
            await service.submit([at(instrument_id, 9, 100.0)])
    await closing
    ids = [(await p).ids[0] for p in pending]
    async with session_factory() as session:
        stored = (await session.scalars(select(MarketData.id).order_by(MarketData.id))).all()
    assert list(stored) == ids


async def test_keyed_requests_are_all_or_nothing_and_a_taken_key_fails_alone(
    service: MarketDataService, session_factory: Sessions, engine: AsyncEngine
) -> None:
    [instrument_id] = await add_instruments(session_factory, ["AAA"])
    await refuse_666(engine)

    def tick(n: int, price: float = 100.0) -> dict[str, Any]:
        return {
            "instrument_id": instrument_id,
            "timestamp": T0 + timedelta(seconds=n),
            "price": price,
        }

    first = await service.store([tick(0), tick(1)], idempotency=IdempotencyKey("taken", "h1"))
    # Another process (a service of its own: it never saw the key) sends the same request
    # again, among other producers' requests that share its transaction.
    other = MarketDataService(session_factory)
    try:
        results = await asyncio.gather(
            other.store([tick(10)]),
            other.store([tick(0), tick(1)], idempotency=IdempotencyKey("taken", "h1")),
            other.store(
                [tick(11), tick(12, 666.0), tick(13)], idempotency=IdempotencyKey("bad", "h2")
            ),
            other.store([tick(14), tick(15, 666.0)]),
            other.store([tick(16)], idempotency=IdempotencyKey("new", "h3")),
        )
    finally:
        await other.aclose()
    plain, replay, refused, half, new = results
    assert replay.replayed
    assert (replay.ids, replay.alerts) == (first.ids, first.alerts)
    # The keyed request with a refused tick stored none of its ticks, and left no receipt.
    assert refused.ids == []
    assert [r.position for r in refused.rejections] == [0, 1, 2]
    assert all("refused" in r.reason for r in refused.rejections)
    # Unkeyed batch-mates keep the old rule: only the refused tick fails.
    assert len(plain.ids) == 1
    assert (len(half.ids), [r.position for r in half.rejections]) == (1, [1])
    assert len(new.ids) == 1
    async with session_factory() as session:
        ids = (await session.scalars(select(MarketData.id).order_by(MarketData.id))).all()
        keys = (await session.scalars(text("SELECT key FROM write_receipts ORDER BY key"))).all()
    assert sorted(ids) == sorted(first.ids + plain.ids + half.ids + new.ids)
    assert keys == ["new", "taken"]
