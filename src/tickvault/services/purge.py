"""Purge: the one place tickvault hard-deletes, and only rows soft-deleted long enough ago.

::

    report = await purge_soft_deleted(session_factory, older_than=timedelta(days=30))
    report.deleted   # {"alert_logs": 120, "market_data": 4031, "write_receipts": 18}

Only market_data and alert_logs are soft-deleted, and nothing refers to their rows, so their
RESTRICT foreign keys never block a purge (instruments and rules are deactivated, never
purged). Rows go in batches, each its own short transaction, so a large purge never holds a
lock for long; ``dry_run=True`` only counts. With ``confirm_above=N`` a purge that would
delete more than N rows (counted first by a dry run) deletes nothing and raises
``ConfirmationRequired`` with the count per table.

The receipts of idempotent requests are kept ``idempotency_key_hours`` (a setting, 24 by
default): a purge also removes older ones (``report.deleted["write_receipts"]``). The
receipts of file loads stay: they keep a file from being loaded twice.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.database.session import INCLUDE_DELETED
from tickvault.database.types import utcnow
from tickvault.errors import ConfirmationRequired, ValidationError
from tickvault.models import AlertLog, MarketData, WriteReceipt
from tickvault.settings import get_settings

PURGEABLE = (AlertLog, MarketData)


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # would be deleted, on a dry run
    keys_cutoff: datetime | None = None  # idempotency keys older than this go too


async def purge_soft_deleted(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = 10_000,
    confirm_above: int | None = None,
) -> PurgeReport:
    """Hard-delete rows soft-deleted before ``now - older_than``; refuse, deleting nothing,
    if that is more than ``confirm_above`` rows."""
    if older_than < timedelta(0):
        raise ValidationError(f"older_than must not be negative, got {older_than}")
    if not 1 <= batch_size <= 1_000_000:
        raise ValidationError(f"batch_size must be between 1 and 1,000,000, got {batch_size}")
    if confirm_above is not None and confirm_above < 0:
        raise ValidationError(f"confirm_above must not be negative, got {confirm_above}")
    if confirm_above is not None and not dry_run:
        # The dry run counts whatever the purge deletes, every table of it.
        counts = (
            await purge_soft_deleted(session_factory, older_than=older_than, dry_run=True)
        ).deleted
        total = sum(counts.values())
        if total > confirm_above:
            per_table = ", ".join(f"{table}: {count:,}" for table, count in counts.items())
            raise ConfirmationRequired(
                f"purge would delete {total:,} rows ({per_table}), more than "
                f"{confirm_above:,}; nothing was deleted"
            )
    report = PurgeReport(cutoff=utcnow() - older_than, dry_run=dry_run)
    for model in PURGEABLE:
        expired = model.deleted_at < report.cutoff
        if dry_run:
            async with session_factory() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(model)
                    .where(expired)
                    .execution_options(**{INCLUDE_DELETED: True})
                )
            report.deleted[model.__tablename__] = int(count or 0)
            continue
        total = 0
        while True:
            async with session_factory.begin() as session:
                # Oldest deletions first, in the partial deleted_at index's own order: by id,
                # SQLite (no statistics) would walk the whole table to skip a sort.
                ids = select(model.id).where(expired).order_by(model.deleted_at).limit(batch_size)
                result = await session.execute(
                    delete(model)
                    .where(model.id.in_(ids.scalar_subquery()))
                    .execution_options(synchronize_session=False, **{INCLUDE_DELETED: True})
                )
            deleted = int(result.rowcount)  # type: ignore[attr-defined]
            total += deleted
            if deleted < batch_size:
                break
        report.deleted[model.__tablename__] = total
    report.keys_cutoff = utcnow() - timedelta(hours=get_settings().idempotency_key_hours)
    expired_keys = (WriteReceipt.kind == "request") & (WriteReceipt.created_at < report.keys_cutoff)
    if dry_run:
        async with session_factory() as session:
            count = await session.scalar(select(func.count()).where(expired_keys))
        report.deleted[WriteReceipt.__tablename__] = int(count or 0)
        return report
    total = 0
    while True:
        async with session_factory.begin() as session:
            ids = select(WriteReceipt.id).where(expired_keys).limit(batch_size)
            result = await session.execute(
                delete(WriteReceipt)
                .where(WriteReceipt.id.in_(ids.scalar_subquery()))
                .execution_options(synchronize_session=False)
            )
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        total += deleted
        if deleted < batch_size:
            break
    report.deleted[WriteReceipt.__tablename__] = total
    return report
