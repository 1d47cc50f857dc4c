"""Purge on both engines: only rows soft-deleted before the cutoff go, in batches; the dry
run only counts; parents and live rows stay."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.types import utcnow
from tickvault.errors import ConfirmationRequired, ValidationError
from tickvault.models import AlertLog, AlertRule, Instrument, MarketData, WriteReceipt
from tickvault.services.purge import purge_soft_deleted

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def _seed(sessions: Sessions) -> None:
    now = utcnow()
    async with sessions.begin() as session:
        instrument = Instrument(symbol="ES", name="E-mini")
        rule = AlertRule(name="r", instrument=instrument, condition="price_above", threshold=1)
        ages = [None] * 5 + [now - timedelta(days=10)] * 4 + [now - timedelta(days=40)] * 7
        session.add_all(
            MarketData(
                instrument=instrument,
                timestamp=T0 + timedelta(seconds=i),
                price=1.0,
                deleted_at=age,
            )
            for i, age in enumerate(ages)
        )
        session.add_all(
            AlertLog(
                rule=rule, instrument=instrument, timestamp=T0, fired_status="fired", deleted_at=age
            )
            for age in ages[::2]
        )


async def _counts(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        return {
            model.__tablename__: await session.scalar(
                select(func.count()).select_from(model).execution_options(include_deleted=True)
            )
            for model in (Instrument, AlertRule, MarketData, AlertLog)
        }


async def test_dry_run_counts_and_purge_deletes_only_expired_rows(
    session_factory: Sessions,
) -> None:
    await _seed(session_factory)
    before = await _counts(session_factory)

    dry = await purge_soft_deleted(session_factory, older_than=timedelta(days=30), dry_run=True)
    assert dry.deleted == {"alert_logs": 3, "market_data": 7, "write_receipts": 0}
    assert await _counts(session_factory) == before

    done = await purge_soft_deleted(session_factory, older_than=timedelta(days=30), batch_size=3)
    assert done.deleted == {"alert_logs": 3, "market_data": 7, "write_receipts": 0}
    after = await _counts(session_factory)
    assert after == {
        **before,
        "market_data": before["market_data"] - 7,
        "alert_logs": before["alert_logs"] - 3,
    }

    # Rows soft-deleted 10 days ago are still there, and can be restored.
    async with session_factory() as session:
        recent = await session.scalar(
            select(func.count())
            .select_from(MarketData)
            .where(MarketData.is_deleted)
            .execution_options(include_deleted=True)
        )
    assert recent == 4
    assert (await purge_soft_deleted(session_factory, older_than=timedelta(days=30))).deleted == {
        "alert_logs": 0,
        "market_data": 0,
        "write_receipts": 0,
    }


async def test_a_zero_retention_purges_every_soft_deleted_row(session_factory: Sessions) -> None:
    await _seed(session_factory)
    report = await purge_soft_deleted(session_factory, older_than=timedelta(0))
    assert report.deleted == {"alert_logs": 5, "market_data": 11, "write_receipts": 0}
    async with session_factory() as session:
        live = await session.scalar(select(func.count()).select_from(MarketData))
    assert live == 5


async def test_a_negative_retention_is_refused(session_factory: Sessions) -> None:
    with pytest.raises(ValidationError, match="older_than must not be negative"):
        await purge_soft_deleted(session_factory, older_than=timedelta(days=-1))


async def test_purge_forgets_idempotency_keys_past_their_hours_and_keeps_file_loads(
    session_factory: Sessions,
) -> None:
    now = utcnow()
    ages = {"old": 30, "fresh": 20, "file-old": 100}  # hours
    async with session_factory.begin() as session:
        session.add_all(
            WriteReceipt(
                kind="file" if key.startswith("file") else "request",
                key=key,
                fingerprint="f",
                created_at=now - timedelta(hours=hours),
            )
            for key, hours in ages.items()
        )

    dry = await purge_soft_deleted(session_factory, older_than=timedelta(days=30), dry_run=True)
    assert dry.deleted["write_receipts"] == 1
    assert dry.keys_cutoff is not None
    assert now - timedelta(hours=24, seconds=5) < dry.keys_cutoff < now - timedelta(hours=23)
    done = await purge_soft_deleted(session_factory, older_than=timedelta(days=30))
    assert done.deleted["write_receipts"] == 1
    async with session_factory() as session:
        keys = (await session.scalars(select(WriteReceipt.key).order_by(WriteReceipt.key))).all()
    assert keys == ["file-old", "fresh"]


async def test_more_than_confirm_above_rows_is_refused_and_deletes_nothing(
    session_factory: Sessions,
) -> None:
    await _seed(session_factory)  # 7 ticks and 3 alert logs soft-deleted 40 days ago
    async with session_factory.begin() as session:  # and one idempotency key past its hours
        session.add(
            WriteReceipt(
                kind="request", key="k", fingerprint="f", created_at=utcnow() - timedelta(days=2)
            )
        )

    async def counts() -> dict[str, int]:
        async with session_factory() as session:
            receipts = await session.scalar(select(func.count()).select_from(WriteReceipt))
        return {**await _counts(session_factory), "write_receipts": int(receipts or 0)}

    before = await counts()
    with pytest.raises(ConfirmationRequired) as refused:
        await purge_soft_deleted(session_factory, older_than=timedelta(days=30), confirm_above=10)
    assert str(refused.value) == (
        "purge would delete 11 rows (alert_logs: 3, market_data: 7, write_receipts: 1), "
        "more than 10; nothing was deleted"
    )
    assert await counts() == before

    done = await purge_soft_deleted(
        session_factory, older_than=timedelta(days=30), confirm_above=11
    )
    assert done.deleted == {"alert_logs": 3, "market_data": 7, "write_receipts": 1}
    assert await counts() == {
        **before,
        "market_data": before["market_data"] - 7,
        "alert_logs": before["alert_logs"] - 3,
        "write_receipts": 0,
    }
