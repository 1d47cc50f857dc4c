"""The models at head through tickvault's sessions: timestamps, soft delete and the
default read filter, on SQLite and PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from tickvault.models import AlertLog, AlertRule, Instrument, MarketData

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


async def _instrument_with_ticks(sessions: Sessions, n: int = 3) -> tuple[int, list[int]]:
    async with sessions.begin() as session:
        instrument = Instrument(symbol="MSFT", name="Microsoft", exchange="XNAS")
        ticks = [
            MarketData(instrument=instrument, timestamp=T0 + timedelta(seconds=i), price=400.0 + i)
            for i in range(n)
        ]
        session.add_all([instrument, *ticks])
    return instrument.id, [t.id for t in ticks]


async def test_new_rows_get_defaults_and_aware_utc_timestamps(session_factory: Sessions) -> None:
    instrument_id, (tick_id, *_) = await _instrument_with_ticks(session_factory)

    async with session_factory() as session:
        instrument = await session.get(Instrument, instrument_id)
        tick = await session.get(MarketData, tick_id)
    assert instrument is not None
    assert tick is not None
    assert (instrument.asset_class, instrument.currency, instrument.is_active) == (
        "equity",
        "USD",
        True,
    )
    for value in (instrument.created_at, instrument.updated_at, tick.timestamp, tick.created_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert tick.timestamp == T0
    assert tick.is_active
    assert not tick.is_deleted
    assert tick.deleted_at is None


async def test_timestamps_in_other_zones_are_stored_as_the_same_instant(
    session_factory: Sessions,
) -> None:
    new_york = timezone(timedelta(hours=-4))
    instrument_id, _ = await _instrument_with_ticks(session_factory, n=0)
    async with session_factory.begin() as session:
        tick = MarketData(instrument_id=instrument_id, timestamp=T0.astimezone(new_york))
        session.add(tick)

    async with session_factory() as session:
        stored = await session.get(MarketData, tick.id)
    assert stored is not None
    assert stored.timestamp == T0
    assert stored.timestamp.utcoffset() == timedelta(0)


async def test_a_naive_timestamp_is_refused_and_nothing_is_written(
    session_factory: Sessions,
) -> None:
    instrument_id, _ = await _instrument_with_ticks(session_factory, n=0)
    with pytest.raises(StatementError, match="naive datetime"):
        async with session_factory.begin() as session:
            session.add(MarketData(instrument_id=instrument_id, timestamp=datetime(2024, 1, 1)))

    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(MarketData)) == 0


async def test_updated_at_moves_on_update_not_on_read(session_factory: Sessions) -> None:
    instrument_id, _ = await _instrument_with_ticks(session_factory, n=0)
    async with session_factory() as session:
        before = (await session.get(Instrument, instrument_id)).updated_at  # type: ignore[union-attr]

    await asyncio.sleep(0.01)
    async with session_factory.begin() as session:
        instrument = await session.get(Instrument, instrument_id)
        assert instrument is not None
        _ = instrument.name  # a read
    async with session_factory() as session:
        after_read = (await session.get(Instrument, instrument_id)).updated_at  # type: ignore[union-attr]
    assert after_read == before

    async with session_factory.begin() as session:
        instrument = await session.get(Instrument, instrument_id)
        assert instrument is not None
        instrument.name = "Microsoft Corp."
    async with session_factory() as session:
        updated = await session.get(Instrument, instrument_id)
    assert updated is not None
    assert updated.updated_at > before
    assert updated.created_at <= before


async def test_soft_delete_is_idempotent_and_restore_is_harmless(
    session_factory: Sessions,
) -> None:
    _, (tick_id, *_) = await _instrument_with_ticks(session_factory)
    async with session_factory.begin() as session:
        tick = await session.get(MarketData, tick_id)
        assert tick is not None
        tick.soft_delete()
        first = tick.deleted_at
        assert first is not None
        assert first.tzinfo is not None
        assert tick.is_deleted
        assert not tick.is_active
        tick.soft_delete()
        assert tick.deleted_at == first

    async with session_factory() as session:
        stored = await session.get(MarketData, tick_id, execution_options={"include_deleted": True})
    assert stored is not None
    assert stored.deleted_at == first

    async with session_factory.begin() as session:
        tick = await session.get(MarketData, tick_id, execution_options={"include_deleted": True})
        assert tick is not None
        tick.restore()
        tick.restore()
        assert tick.deleted_at is None
        assert tick.is_active
    async with session_factory() as session:
        assert await session.get(MarketData, tick_id) is not None


async def test_default_reads_skip_soft_deleted_rows_and_the_opt_in_shows_them(
    session_factory: Sessions,
) -> None:
    _instrument_id, tick_ids = await _instrument_with_ticks(session_factory, n=3)
    async with session_factory.begin() as session:
        tick = await session.get(MarketData, tick_ids[0])
        assert tick is not None
        tick.soft_delete()
        # Even from the identity map, a soft-deleted row is not handed back by get().
        assert await session.get(MarketData, tick_ids[0]) is None

    async with session_factory() as session:
        visible = (await session.scalars(select(MarketData).order_by(MarketData.id))).all()
        assert [t.id for t in visible] == tick_ids[1:]
        assert await session.get(MarketData, tick_ids[0]) is None
        everything = (
            await session.scalars(select(MarketData).execution_options(include_deleted=True))
        ).all()
        assert len(everything) == 3
        deleted = (
            await session.scalars(
                select(MarketData)
                .where(MarketData.is_deleted)
                .execution_options(include_deleted=True)
            )
        ).all()
        assert [t.id for t in deleted] == tick_ids[:1]
        active = await session.scalar(
            select(func.count())
            .select_from(MarketData)
            .where(MarketData.is_active)
            .execution_options(include_deleted=True)
        )
        assert active == 2


async def test_relationship_loads_skip_soft_deleted_rows(session_factory: Sessions) -> None:
    instrument_id, _ = await _instrument_with_ticks(session_factory, n=0)
    async with session_factory.begin() as session:
        rule = AlertRule(
            name="above 100", instrument_id=instrument_id, condition="price_above", threshold=100
        )
        logs = [
            AlertLog(
                rule=rule,
                instrument_id=instrument_id,
                timestamp=T0,
                fired_status="fired",
                trigger_value=101.0 + i,
                threshold_value=100.0,
            )
            for i in range(3)
        ]
        session.add_all(logs)
        await session.flush()
        logs[1].soft_delete()

    async with session_factory() as session:
        loaded = await session.scalar(select(AlertRule).options(selectinload(AlertRule.alert_logs)))
        assert loaded is not None
        assert sorted(log.id for log in loaded.alert_logs) == sorted([logs[0].id, logs[2].id])
        assert {log.delivery_status for log in loaded.alert_logs} == {"pending"}

    async with session_factory() as session:
        loaded = await session.scalar(
            select(AlertRule)
            .options(selectinload(AlertRule.alert_logs))
            .execution_options(include_deleted=True)
        )
        assert loaded is not None
        assert len(loaded.alert_logs) == 3


async def test_session_delete_is_a_hard_delete_refused_for_a_referenced_row(
    session_factory: Sessions,
) -> None:
    instrument_id, tick_ids = await _instrument_with_ticks(session_factory, n=3)
    async with session_factory.begin() as session:
        soft = await session.get(MarketData, tick_ids[1])
        assert soft is not None
        soft.soft_delete()
    async with session_factory.begin() as session:
        live = await session.get(MarketData, tick_ids[0])
        deleted = await session.get(
            MarketData, tick_ids[1], execution_options={"include_deleted": True}
        )
        await session.delete(live)
        await session.delete(deleted)

    async with session_factory() as session:
        everything = await session.scalars(
            select(MarketData.id).execution_options(include_deleted=True)
        )
        assert list(everything) == tick_ids[2:]  # both rows gone, not marked
        assert await session.scalar(select(func.count()).select_from(MarketData)) == 1

    # RESTRICT: an instrument that still has a tick is not deleted, and nothing changes.
    async with session_factory() as session:
        await session.delete(await session.get(Instrument, instrument_id))
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            await session.commit()
    async with session_factory() as session:
        assert await session.get(Instrument, instrument_id) is not None
        assert list(await session.scalars(select(MarketData.id))) == tick_ids[2:]
