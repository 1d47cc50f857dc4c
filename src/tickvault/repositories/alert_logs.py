"""Alert logs: what fired, was suppressed or cleared, and whether it was delivered."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tickvault.database.session import INCLUDE_DELETED
from tickvault.database.types import utcnow
from tickvault.errors import ValidationError
from tickvault.models import AlertLog
from tickvault.models.alert_logs import DELIVERY_STATUSES, FIRED_STATUSES
from tickvault.repositories.base import (
    Page,
    add_row,
    by_id,
    check_limit,
    fetch_page,
    get_row,
    soft_deleted,
)


@dataclass(frozen=True)
class AlertLogFilter:
    rule_id: int | None = None
    instrument_id: int | None = None
    fired_status: str | None = None
    delivery_status: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.fired_status is not None and self.fired_status not in FIRED_STATUSES:
            raise ValidationError(
                f"fired_status must be one of {', '.join(FIRED_STATUSES)}, "
                f"got {self.fired_status!r}"
            )
        if self.delivery_status is not None and self.delivery_status not in DELIVERY_STATUSES:
            raise ValidationError(
                f"delivery_status must be one of {', '.join(DELIVERY_STATUSES)}, "
                f"got {self.delivery_status!r}"
            )


class AlertLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, log: AlertLog) -> AlertLog:
        return await add_row(
            self.session,
            log,
            "alert log",
            foreign_key=ValidationError,
            foreign_key_message=f"rule {log.rule_id} or instrument {log.instrument_id} is missing",
        )

    async def get(self, log_id: int, *, include_deleted: bool = False) -> AlertLog:
        return await get_row(
            self.session, AlertLog, log_id, "alert log", include_deleted=include_deleted
        )

    async def find(
        self,
        where: AlertLogFilter = AlertLogFilter(),
        *,
        limit: int = 100,
        after_id: int | None = None,
        deleted: bool = False,
    ) -> Page[AlertLog, int]:
        """Newest first (by id), filtered; ``deleted=True`` lists soft-deleted logs only."""
        query = select(AlertLog).order_by(AlertLog.id.desc()).limit(check_limit(limit) + 1)
        for column, value in (
            (AlertLog.rule_id, where.rule_id),
            (AlertLog.instrument_id, where.instrument_id),
            (AlertLog.fired_status, where.fired_status),
            (AlertLog.delivery_status, where.delivery_status),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.start is not None:
            query = query.where(AlertLog.timestamp >= where.start)
        if where.end is not None:
            query = query.where(AlertLog.timestamp < where.end)
        if after_id is not None:
            query = query.where(AlertLog.id < after_id)
        if deleted:
            query = query.where(soft_deleted(AlertLog)).execution_options(**{INCLUDE_DELETED: True})
        return await fetch_page(self.session, query, limit, by_id)

    async def pending_deliveries(self, limit: int = 100) -> list[AlertLog]:
        """Fired alerts still waiting to be delivered, oldest first."""
        query = (
            select(AlertLog)
            .where(AlertLog.fired_status == "fired", AlertLog.delivery_status == "pending")
            .order_by(AlertLog.id)
            .limit(check_limit(limit))
        )
        return list(await self.session.scalars(query))

    async def set_delivery_status(self, log_id: int, status: str) -> AlertLog:
        if status not in DELIVERY_STATUSES:
            raise ValidationError(
                f"delivery_status must be one of {', '.join(DELIVERY_STATUSES)}, got {status!r}"
            )
        log = await self.get(log_id)
        log.delivery_status = status
        await self.session.flush()
        return log

    async def mark_sent(self, log_ids: list[int]) -> int:
        return await self._mark(log_ids, "sent")

    async def mark_failed(self, log_ids: list[int]) -> int:
        return await self._mark(log_ids, "failed")

    async def _mark(self, log_ids: list[int], status: str) -> int:
        result = await self.session.execute(
            update(AlertLog)
            .where(AlertLog.id.in_(log_ids), AlertLog.deleted_at.is_(None))
            .values(delivery_status=status, updated_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def soft_delete(self, log_id: int) -> AlertLog:
        log = await self.get(log_id, include_deleted=True)
        log.soft_delete()
        await self.session.flush()
        return log

    async def restore(self, log_id: int) -> AlertLog:
        log = await self.get(log_id, include_deleted=True)
        log.restore()
        await self.session.flush()
        return log
