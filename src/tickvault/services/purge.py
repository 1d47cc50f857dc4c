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

On PostgreSQL with a partitioned market_data (``tickvault db partition``), the purge is also
its retention: every partition whose whole time range is older than the cutoff is detached
and dropped, ticks live or soft-deleted alike, each step one statement for them all
(``report.dropped``, each with its rows: counted on a dry run, where they count towards
``confirm_above``; as the partition's statistics have them on a purge, ``estimated``).
Rows of the other partitions, the default one included, go row by row as above: only
soft-deleted ones.
``drop_partitions=False`` leaves every partition in place.

The receipts of idempotent requests are kept ``idempotency_key_hours`` (a setting, 24 by
default): a purge also removes older ones (``report.deleted["write_receipts"]``). The
receipts of file loads stay: they keep a file from being loaded twice.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from tickvault.database import partitions as parts
from tickvault.database.session import INCLUDE_DELETED
from tickvault.database.types import utcnow
from tickvault.errors import ConfirmationRequired, ValidationError
from tickvault.models import AlertLog, MarketData, WriteReceipt
from tickvault.settings import get_settings

PURGEABLE = (AlertLog, MarketData)
LOCK_ATTEMPTS = 5
T = TypeVar("T")


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # would be deleted, on a dry run
    keys_cutoff: datetime | None = None  # idempotency keys older than this go too
    dropped: list["DroppedPartition"] = field(default_factory=list)  # would be, on a dry run


@dataclass(frozen=True)
class DroppedPartition:
    name: str
    lower: datetime | None
    upper: datetime | None
    rows: int
    estimated: bool = False  # rows as the partition's statistics had them (not counted)


async def purge_soft_deleted(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = 10_000,
    confirm_above: int | None = None,
    drop_partitions: bool = True,
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
        dry = await purge_soft_deleted(
            session_factory, older_than=older_than, dry_run=True, drop_partitions=drop_partitions
        )
        counts = dict(dry.deleted)
        if dry.dropped:
            counts["market_data partitions"] = sum(p.rows for p in dry.dropped)
        total = sum(counts.values())
        if total > confirm_above:
            per_table = ", ".join(f"{table}: {count:,}" for table, count in counts.items())
            raise ConfirmationRequired(
                f"purge would delete {total:,} rows ({per_table}), more than "
                f"{confirm_above:,}; nothing was deleted"
            )
    report = PurgeReport(cutoff=utcnow() - older_than, dry_run=dry_run)
    if drop_partitions:
        report.dropped = await _drop_expired_partitions(session_factory, report.cutoff, dry_run)
    for model in PURGEABLE:
        expired = model.deleted_at < report.cutoff
        if dry_run:
            query = (
                select(func.count())
                .select_from(model)
                .where(expired)
                .execution_options(**{INCLUDE_DELETED: True})
            )
            if model is MarketData and report.dropped:
                # Rows of the partitions listed are counted there, not twice.
                names = [p.name for p in report.dropped]
                outside = text("market_data.tableoid::regclass::text <> ALL(:names)")
                query = query.where(outside.bindparams(names=names))
            async with session_factory() as session:
                count = await session.scalar(query)
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


async def _drop_expired_partitions(
    session_factory: async_sessionmaker[AsyncSession], cutoff: datetime, dry_run: bool
) -> list[DroppedPartition]:
    """Detach the partitions wholly before ``cutoff`` in one statement, then drop them (and
    any a stopped purge detached without dropping) in one; on a dry run, only count them."""
    if dry_run:
        async with session_factory() as session:
            connection = await session.connection()
            leftovers, expired = await _due(connection, cutoff)
            return [await _counted(connection, p) for p in [*leftovers, *expired]]

    async def detach(connection: AsyncConnection) -> list[DroppedPartition]:
        leftovers, expired = await _due(connection, cutoff)
        # Nothing writes to a detached table: one left behind is counted. Expired partitions
        # are not, which would read every row: their statistics say about how many go (one
        # never analyzed is counted, before the lock is asked for).
        dropped = [await _counted(connection, p) for p in leftovers]
        estimates = await parts.estimated_rows(connection, expired) if expired else []
        for p, estimate in zip(expired, estimates, strict=True):
            if estimate < 0:
                dropped.append(await _counted(connection, p))
            else:
                dropped.append(DroppedPartition(p.name, p.lower, p.upper, estimate, True))
        if expired:
            await parts.detach(connection, expired)
        return dropped

    dropped = await _with_lock_timeout(session_factory, detach)
    if dropped:
        # Detached, they are no longer market_data's: dropping them takes no lock of it.
        async with session_factory.begin() as session:
            await parts.drop(await session.connection(), [p.name for p in dropped])
    return dropped


async def _counted(connection: AsyncConnection, partition: parts.Partition) -> DroppedPartition:
    rows = await parts.count_rows(connection, partition)
    return DroppedPartition(partition.name, partition.lower, partition.upper, rows)


async def _due(
    connection: AsyncConnection, cutoff: datetime
) -> tuple[list[parts.Partition], list[parts.Partition]]:
    """Tables an earlier purge detached without dropping, and the partitions past ``cutoff``."""
    layout = await parts.read_layout(connection)
    if layout is None:
        return [], []
    return await parts.detached(connection), parts.expired(layout, cutoff)


async def _with_lock_timeout(
    session_factory: async_sessionmaker[AsyncSession],
    step: Callable[[AsyncConnection], Awaitable[T]],
) -> T:
    """Run ``step`` in a transaction that waits at most the migration lock timeout for
    its lock (a queued ACCESS EXCLUSIVE would stall every reader and writer behind it),
    trying again a few times while the table stays busy."""
    timeout = int(get_settings().migration_lock_timeout_ms)
    attempt = 1
    while True:
        try:
            async with session_factory.begin() as session:
                connection = await session.connection()
                if connection.dialect.name == "postgresql":
                    await connection.execute(text(f"SET LOCAL lock_timeout = '{timeout}ms'"))
                return await step(connection)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == LOCK_ATTEMPTS:
                raise
            await asyncio.sleep(0.2 * attempt)
            attempt += 1
