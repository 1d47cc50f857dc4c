"""Alert rules: add, get, list; deactivated through ``is_active`` rather than deleted."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tickvault.errors import ValidationError
from tickvault.models import AlertRule
from tickvault.repositories.base import (
    Page,
    add_row,
    by_id,
    check_limit,
    delete_unreferenced,
    fetch_page,
    get_row,
)

UPDATABLE = frozenset({"name", "threshold", "cooldown_seconds", "is_active"})


class AlertRuleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, rule: AlertRule) -> AlertRule:
        return await add_row(
            self.session,
            rule,
            f"alert rule {rule.name!r}",
            foreign_key=ValidationError,
            foreign_key_message=f"instrument {rule.instrument_id} does not exist",
        )

    async def get(self, rule_id: int) -> AlertRule:
        return await get_row(self.session, AlertRule, rule_id, "alert rule")

    async def active_for(self, instrument_ids: set[int]) -> list[AlertRule]:
        query = select(AlertRule).where(
            AlertRule.is_active, AlertRule.instrument_id.in_(sorted(instrument_ids))
        )
        return list(await self.session.scalars(query.order_by(AlertRule.id)))

    async def find(
        self,
        *,
        instrument_id: int | None = None,
        active: bool | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> Page[AlertRule, int]:
        query = select(AlertRule).order_by(AlertRule.id).limit(check_limit(limit) + 1)
        if instrument_id is not None:
            query = query.where(AlertRule.instrument_id == instrument_id)
        if active is not None:
            query = query.where(AlertRule.is_active.is_(active))
        if after_id is not None:
            query = query.where(AlertRule.id > after_id)
        return await fetch_page(self.session, query, limit, by_id)

    async def set_active(self, rule_id: int, active: bool) -> AlertRule:
        return await self.update(rule_id, is_active=active)

    async def update(self, rule_id: int, **changes: Any) -> AlertRule:
        """Change ``name``, ``threshold``, ``cooldown_seconds`` or ``is_active``."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValidationError(
                f"alert rule fields cannot be changed: {', '.join(sorted(unknown))}"
            )
        rule = await self.get(rule_id)
        for name, value in changes.items():
            setattr(rule, name, value)
        await self.session.flush()
        return rule

    async def delete(self, rule_id: int) -> None:
        """Delete a rule that never logged anything; otherwise ``StillReferenced``."""
        rule = await self.get(rule_id)
        await delete_unreferenced(self.session, rule, f"alert rule {rule_id}", "alert logs")
