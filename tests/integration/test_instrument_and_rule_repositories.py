"""Instruments and alert rules through their repositories, on both engines."""

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.errors import ConflictError, NotFoundError, ValidationError
from tickvault.models import AlertRule, Instrument
from tickvault.repositories.alert_rules import AlertRuleRepository
from tickvault.repositories.instruments import InstrumentRepository

Sessions = async_sessionmaker[AsyncSession]


async def test_instruments_page_by_id_and_deactivate(session_factory: Sessions) -> None:
    async with session_factory.begin() as session:
        repo = InstrumentRepository(session)
        for i in range(7):
            await repo.add(Instrument(symbol=f"S{i}", name=f"Instrument {i}"))
        await repo.set_active((await repo.get_by_symbol("S3")).id, False)

    async with session_factory() as session:
        repo = InstrumentRepository(session)
        seen, cursor = [], None
        while True:
            page = await repo.find(limit=3, after_id=cursor)
            seen += [i.symbol for i in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [f"S{i}" for i in range(7)]
        active = await repo.find(active=True, limit=100)
        assert [i.symbol for i in active.items] == ["S0", "S1", "S2", "S4", "S5", "S6"]
        assert active.next_cursor is None
        with pytest.raises(NotFoundError, match="instrument 'NOPE' not found"):
            await repo.get_by_symbol("NOPE")
        with pytest.raises(NotFoundError, match="instrument 99 not found"):
            await repo.get(99)


async def test_a_taken_symbol_is_a_conflict_and_nothing_is_written(
    session_factory: Sessions,
) -> None:
    async with session_factory.begin() as session:
        await InstrumentRepository(session).add(Instrument(symbol="AAPL", name="Apple"))
    with pytest.raises(ConflictError, match="instrument 'AAPL': already exists"):
        async with session_factory.begin() as session:
            await InstrumentRepository(session).add(Instrument(symbol="AAPL", name="Again"))
    async with session_factory() as session:
        assert len((await InstrumentRepository(session).find()).items) == 1


async def test_rules_need_an_existing_instrument_and_are_deactivated(
    session_factory: Sessions,
) -> None:
    async with session_factory.begin() as session:
        instrument = await InstrumentRepository(session).add(Instrument(symbol="ES", name="ES"))
        rules = AlertRuleRepository(session)
        first = await rules.add(
            AlertRule(
                name="a", instrument_id=instrument.id, condition="price_above", threshold=5000
            )
        )
        await rules.add(
            AlertRule(name="b", instrument_id=instrument.id, condition="volume_above", threshold=10)
        )
        await rules.set_active(first.id, False)

    with pytest.raises(ValidationError, match="instrument 42 does not exist"):
        async with session_factory.begin() as session:
            await AlertRuleRepository(session).add(
                AlertRule(name="c", instrument_id=42, condition="price_above", threshold=1)
            )

    async with session_factory() as session:
        rules = AlertRuleRepository(session)
        assert [r.name for r in (await rules.find()).items] == ["a", "b"]
        assert [r.name for r in (await rules.find(active=True)).items] == ["b"]
        assert [r.name for r in await rules.active_for({instrument.id})] == ["b"]


async def test_rules_page_by_id_each_rule_once(session_factory: Sessions) -> None:
    async with session_factory.begin() as session:
        a = await InstrumentRepository(session).add(Instrument(symbol="A", name="A"))
        b = await InstrumentRepository(session).add(Instrument(symbol="B", name="B"))
        rules = AlertRuleRepository(session)
        for i in range(8):
            await rules.add(
                AlertRule(
                    name=f"r{i}",
                    instrument_id=(a if i % 3 else b).id,
                    condition="price_above",
                    threshold=i,
                    is_active=i != 4,
                )
            )

    async def every_page(limit: int, **where: object) -> list[list[str]]:
        pages, cursor = [], None
        async with session_factory() as session:
            repo = AlertRuleRepository(session)
            while True:
                page = await repo.find(limit=limit, after_id=cursor, **where)  # type: ignore[arg-type]
                pages.append([rule.name for rule in page.items])
                if page.next_cursor is None:
                    return pages
                assert page.next_cursor == page.items[-1].id
                cursor = page.next_cursor

    assert await every_page(3) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6", "r7"]]
    assert await every_page(2) == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"], ["r6", "r7"]]
    assert await every_page(2, instrument_id=a.id, active=True) == [["r1", "r2"], ["r5", "r7"]]
    assert await every_page(10, instrument_id=b.id) == [["r0", "r3", "r6"]]
