"""/alert-rules (create, list, get, change, deactivate) and /alert-logs (list, delivery
status, soft delete, restore)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from tickvault.api.responses import COMMON, CONFLICT, NOT_FOUND, TOO_LARGE
from tickvault.api.routes._paging import LAST_INT_ID, Cursor, Limit, id_cursor, page_of
from tickvault.api.runtime import RuntimeDep
from tickvault.api.schemas import (
    AlertLogOut,
    AlertRuleCreate,
    AlertRuleOut,
    AlertRuleUpdate,
    DeliveryUpdate,
    InstrumentId,
    Page,
    RowId,
    UtcDatetime,
)
from tickvault.api.security import READ, WRITE
from tickvault.models import AlertRule
from tickvault.models.alert_logs import DELIVERY_STATUSES, FIRED_STATUSES
from tickvault.repositories.alert_logs import AlertLogFilter, AlertLogRepository
from tickvault.repositories.alert_rules import AlertRuleRepository
from tickvault.repositories.instruments import InstrumentRepository

rules = APIRouter(prefix="/alert-rules", tags=["alert rules"], responses=COMMON)
logs = APIRouter(prefix="/alert-logs", tags=["alert logs"], responses=COMMON)
RuleIdPath = Annotated[InstrumentId, Path(description="Alert rule id.")]
LogIdPath = Annotated[RowId, Path(description="Alert log id.")]


@rules.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=WRITE,
    responses={**NOT_FOUND, **TOO_LARGE},
)
async def create_rule(body: AlertRuleCreate, runtime: RuntimeDep) -> AlertRuleOut:
    async with runtime.transaction(write=True) as session:
        await InstrumentRepository(session).get(body.instrument_id)  # 404 if unknown
        rule = await AlertRuleRepository(session).add(AlertRule(**body.model_dump()))
        return AlertRuleOut.model_validate(rule)


@rules.get("", dependencies=READ)
async def list_rules(
    runtime: RuntimeDep,
    instrument_id: Annotated[InstrumentId | None, Query()] = None,
    active: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertRuleOut]:
    async with runtime.transaction() as session:
        page = await AlertRuleRepository(session).find(
            instrument_id=instrument_id,
            active=active,
            limit=limit,
            after_id=id_cursor(cursor, LAST_INT_ID),
        )
        return page_of(AlertRuleOut, page)


@rules.get("/{rule_id}", dependencies=READ, responses=NOT_FOUND)
async def get_rule(rule_id: RuleIdPath, runtime: RuntimeDep) -> AlertRuleOut:
    async with runtime.transaction() as session:
        return AlertRuleOut.model_validate(await AlertRuleRepository(session).get(rule_id))


@rules.patch("/{rule_id}", dependencies=WRITE, responses={**NOT_FOUND, **TOO_LARGE})
async def update_rule(
    rule_id: RuleIdPath, body: AlertRuleUpdate, runtime: RuntimeDep
) -> AlertRuleOut:
    """Change a rule's name, threshold, cooldown, or deactivate it (`{"is_active": false}`)."""
    async with runtime.transaction(write=True) as session:
        rule = await AlertRuleRepository(session).update(
            rule_id, **body.model_dump(exclude_unset=True, exclude_none=True)
        )
        return AlertRuleOut.model_validate(rule)


@rules.delete(
    "/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=WRITE,
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_rule(rule_id: RuleIdPath, runtime: RuntimeDep) -> Response:
    """Delete a rule that never logged an alert; one with logs gets 409 (deactivate it)."""
    async with runtime.transaction(write=True) as session:
        await AlertRuleRepository(session).delete(rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@logs.get("", dependencies=READ)
async def list_logs(
    runtime: RuntimeDep,
    rule_id: Annotated[InstrumentId | None, Query()] = None,
    instrument_id: Annotated[InstrumentId | None, Query()] = None,
    fired_status: Literal[FIRED_STATUSES] | None = None,  # type: ignore[valid-type]
    delivery_status: Literal[DELIVERY_STATUSES] | None = None,  # type: ignore[valid-type]
    start: Annotated[UtcDatetime | None, Query(description="From (inclusive).")] = None,
    end: Annotated[UtcDatetime | None, Query(description="To (exclusive).")] = None,
    deleted: Annotated[bool, Query(description="List soft-deleted logs instead.")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertLogOut]:
    """Alert logs, newest first."""
    where = AlertLogFilter(rule_id, instrument_id, fired_status, delivery_status, start, end)
    async with runtime.transaction() as session:
        page = await AlertLogRepository(session).find(
            where, limit=limit, after_id=id_cursor(cursor), deleted=deleted
        )
        return page_of(AlertLogOut, page)


@logs.get("/{log_id}", dependencies=READ, responses=NOT_FOUND)
async def get_log(log_id: LogIdPath, runtime: RuntimeDep) -> AlertLogOut:
    async with runtime.transaction() as session:
        return AlertLogOut.model_validate(await AlertLogRepository(session).get(log_id))


@logs.patch("/{log_id}", dependencies=WRITE, responses={**NOT_FOUND, **TOO_LARGE})
async def update_delivery(
    log_id: LogIdPath, body: DeliveryUpdate, runtime: RuntimeDep
) -> AlertLogOut:
    """Record a delivery: `{"delivery_status": "sent"}` (or failed, or pending again)."""
    async with runtime.transaction(write=True) as session:
        log = await AlertLogRepository(session).set_delivery_status(log_id, body.delivery_status)
        return AlertLogOut.model_validate(log)


@logs.delete("/{log_id}", dependencies=WRITE, responses=NOT_FOUND)
async def soft_delete_log(log_id: LogIdPath, runtime: RuntimeDep) -> AlertLogOut:
    async with runtime.transaction(write=True) as session:
        return AlertLogOut.model_validate(await AlertLogRepository(session).soft_delete(log_id))


@logs.post("/{log_id}/restore", dependencies=WRITE, responses=NOT_FOUND)
async def restore_log(log_id: LogIdPath, runtime: RuntimeDep) -> AlertLogOut:
    async with runtime.transaction(write=True) as session:
        return AlertLogOut.model_validate(await AlertLogRepository(session).restore(log_id))
