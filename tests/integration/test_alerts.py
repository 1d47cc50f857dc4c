"""Alert rules of every kind evaluated during ingestion, with cooldowns, on both engines;
then the alert log read back by status and delivered."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.errors import ValidationError
from tickvault.models import AlertLog, AlertRule, Instrument
from tickvault.repositories.alert_logs import AlertLogFilter, AlertLogRepository
from tickvault.services.alerts import AlertService
from tickvault.services.market_data import MarketDataService

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 2, 1, 15, 0, tzinfo=UTC)
RULES = [
    ("price_above", 100, 60),
    ("price_below", 90, 0),
    ("pct_change_above", 5, 60),
    ("pct_change_below", -5, 60),
    ("spread_above", 0.5, 60),
    ("volume_above", 1000, 60),
]
TICKS = [  # seconds after T0, price, bid, ask, volume
    (0, 95.0, 94.9, 95.1, 10),
    (1, 101.0, None, None, None),
    (2, 102.0, None, None, None),
    (3, 99.0, None, None, None),
    (4, 103.0, None, None, None),
    (70, 104.0, None, None, None),
    (71, 85.0, None, None, None),
    (72, 85.5, 85.0, 86.0, None),
    (73, 85.5, None, None, 5000),
]
EXPECTED = [  # seconds, condition, status, trigger value
    (1, "price_above", "fired", 101.0),
    (1, "pct_change_above", "fired", 6.3158),
    (2, "pct_change_above", "cleared", 0.9901),
    (3, "price_above", "cleared", 99.0),
    (4, "price_above", "suppressed", 103.0),  # again within its 60 s cooldown
    (70, "price_above", "fired", 104.0),  # the cooldown has passed, still above
    (71, "price_above", "cleared", 85.0),
    (71, "price_below", "fired", 85.0),
    (71, "pct_change_below", "fired", -18.2692),
    (72, "price_below", "fired", 85.5),  # no cooldown: fires on every tick below
    (72, "pct_change_below", "cleared", 0.5882),
    (72, "spread_above", "fired", 1.0),
    (73, "price_below", "fired", 85.5),
    (73, "volume_above", "fired", 5000.0),
]


def _feed() -> list[dict[str, object]]:
    return [
        {
            "symbol": "NVDA",
            "timestamp": T0 + timedelta(seconds=s),
            "price": p,
            "bid": b,
            "ask": a,
            "volume": v,
        }
        for s, p, b, a, v in TICKS
    ]


@pytest.fixture
async def rules(session_factory: Sessions) -> dict[int, str]:
    async with session_factory.begin() as session:
        instrument = Instrument(symbol="NVDA", name="Nvidia")
        rules = [
            AlertRule(name=c, instrument=instrument, condition=c, threshold=t, cooldown_seconds=cd)
            for c, t, cd in RULES
        ]
        session.add_all(rules)
    return {rule.id: rule.condition for rule in rules}


async def test_every_kind_of_rule_fires_suppresses_and_clears(
    session_factory: Sessions, rules: dict[int, str]
) -> None:
    service = MarketDataService(session_factory, alerts=AlertService(session_factory))
    report = await service.ingest(
        _feed(),
        batch_size=2,  # rule state must carry across batches
    )
    assert (report.accepted, report.alerts) == (len(TICKS), len(EXPECTED))

    async with session_factory() as session:
        logs = (
            await session.scalars(select(AlertLog).order_by(AlertLog.timestamp, AlertLog.rule_id))
        ).all()
    got = [
        (
            int((log.timestamp - T0).total_seconds()),
            rules[log.rule_id],
            log.fired_status,
            log.trigger_value,
        )
        for log in logs
    ]
    assert got == EXPECTED
    for log in logs:
        assert log.threshold_value == float(dict((c, t) for c, t, _ in RULES)[rules[log.rule_id]])
        assert log.evaluation_time_ms is not None
        assert log.evaluation_time_ms >= 0
        assert log.delivery_status == "pending"


async def test_alert_logs_by_status_and_delivery(
    session_factory: Sessions, rules: dict[int, str]
) -> None:
    service = MarketDataService(session_factory, alerts=AlertService(session_factory))
    await service.ingest(_feed())
    fired = sum(1 for e in EXPECTED if e[2] == "fired")

    async with session_factory.begin() as session:
        repo = AlertLogRepository(session)
        pending = await repo.pending_deliveries()
        assert len(pending) == fired
        assert await repo.mark_sent([pending[0].id, pending[1].id]) == 2
        assert await repo.mark_failed([pending[2].id]) == 1
        await repo.soft_delete(pending[3].id)

    # Each log's id named by its (seconds, condition, status): ids follow the ingestion order.
    async with session_factory() as session:
        every = await session.scalars(
            select(AlertLog).order_by(AlertLog.id).execution_options(include_deleted=True)
        )
        ids = {
            (
                int((log.timestamp - T0).total_seconds()),
                rules[log.rule_id],
                log.fired_status,
            ): log.id
            for log in every
        }
    assert list(ids) == [e[:3] for e in EXPECTED]
    assert [log.id for log in pending] == [ids[e[:3]] for e in EXPECTED if e[2] == "fired"]
    assert pending[3].id == ids[(71, "price_below", "fired")]

    async with session_factory() as session:
        repo = AlertLogRepository(session)
        sent = await repo.find(AlertLogFilter(delivery_status="sent"))
        assert [log.id for log in sent.items] == [pending[1].id, pending[0].id]  # newest first
        by_rule = await repo.find(AlertLogFilter(rule_id=pending[0].rule_id, fired_status="fired"))
        assert [log.id for log in by_rule.items] == [
            ids[(70, "price_above", "fired")],
            ids[(1, "price_above", "fired")],
        ]
        window = await repo.find(
            AlertLogFilter(start=T0 + timedelta(seconds=70), end=T0 + timedelta(seconds=72))
        )
        # 70 s and 71 s hold 4 logs; the soft-deleted one (71 s, price_below) is left out.
        assert [log.id for log in window.items] == [
            ids[(71, "pct_change_below", "fired")],
            ids[(71, "price_above", "cleared")],
            ids[(70, "price_above", "fired")],
        ]
        assert [log.id for log in (await repo.find(deleted=True)).items] == [pending[3].id]
        assert [log.id for log in await repo.pending_deliveries()] == [p.id for p in pending[4:]]
        with pytest.raises(ValidationError, match="delivery_status must be one of"):
            AlertLogFilter(delivery_status="lost")


async def test_a_restarted_service_goes_on_from_the_logs_and_ticks_stored(
    session_factory: Sessions, rules: dict[int, str]
) -> None:
    """Three services one after another, as across restarts, log what one service would
    have: each learns the rules' cooldowns and firing state and the previous price from the
    database. Restarted before 4 s, price_above is still in its cooldown (suppressed, not
    fired); before 71 s, it is firing (so cleared) and 104.0 is the previous price (so
    pct_change_below fires at -18.2692)."""
    feed = _feed()
    async with MarketDataService(session_factory, alerts=AlertService(session_factory)) as first:
        await first.ingest(feed[:4])
    async with MarketDataService(session_factory, alerts=AlertService(session_factory)) as second:
        assert (await second.store(feed[4:6])).accepted == 2
    async with MarketDataService(session_factory, alerts=AlertService(session_factory)) as third:
        for tick in feed[6:]:
            await third.insert_market_data(tick)

    async with session_factory() as session:
        logs = (
            await session.scalars(select(AlertLog).order_by(AlertLog.timestamp, AlertLog.rule_id))
        ).all()
    assert [
        (
            int((log.timestamp - T0).total_seconds()),
            rules[log.rule_id],
            log.fired_status,
            log.trigger_value,
        )
        for log in logs
    ] == EXPECTED


async def test_a_single_tick_runs_the_rules_too(
    session_factory: Sessions, rules: dict[int, str]
) -> None:
    service = MarketDataService(session_factory, alerts=AlertService(session_factory))
    await service.insert_market_data({"symbol": "NVDA", "timestamp": T0, "price": 95.0})
    await service.insert_market_data(
        {"symbol": "NVDA", "timestamp": T0 + timedelta(seconds=1), "price": 120.0}
    )

    async with session_factory() as session:
        logs = (await session.scalars(select(AlertLog).order_by(AlertLog.rule_id))).all()
    assert [(rules[log.rule_id], log.fired_status, log.trigger_value) for log in logs] == [
        ("price_above", "fired", 120.0),
        ("pct_change_above", "fired", 26.3158),
    ]


async def test_alert_logs_page_newest_first_each_log_once(
    session_factory: Sessions, rules: dict[int, str]
) -> None:
    service = MarketDataService(session_factory, alerts=AlertService(session_factory))
    await service.ingest(_feed())

    async def every_page(where: AlertLogFilter, limit: int) -> list[list[tuple[object, ...]]]:
        pages, cursor = [], None
        async with session_factory() as session:
            repo = AlertLogRepository(session)
            while True:
                page = await repo.find(where, limit=limit, after_id=cursor)
                pages.append(
                    [
                        (
                            int((log.timestamp - T0).total_seconds()),
                            rules[log.rule_id],
                            log.fired_status,
                        )
                        for log in page.items
                    ]
                )
                if page.next_cursor is None:
                    return pages
                assert page.next_cursor == page.items[-1].id
                cursor = page.next_cursor

    newest_first = [e[:3] for e in reversed(EXPECTED)]
    assert await every_page(AlertLogFilter(), 4) == [
        newest_first[0:4],
        newest_first[4:8],
        newest_first[8:12],
        newest_first[12:14],
    ]
    fired = [e for e in newest_first if e[2] == "fired"]
    assert len(fired) == 9
    assert await every_page(AlertLogFilter(fired_status="fired"), 3) == [
        fired[0:3],
        fired[3:6],
        fired[6:9],
    ]
