"""/instruments: create, list, get, deactivate and reactivate (``is_active``)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from tickvault.api.responses import COMMON, CONFLICT, NOT_FOUND, TOO_LARGE
from tickvault.api.routes._paging import LAST_INT_ID, Cursor, Limit, id_cursor, page_of
from tickvault.api.runtime import RuntimeDep
from tickvault.api.schemas import (
    InstrumentCreate,
    InstrumentId,
    InstrumentOut,
    InstrumentUpdate,
    Page,
)
from tickvault.api.security import READ, WRITE
from tickvault.models import Instrument
from tickvault.repositories.instruments import InstrumentRepository

router = APIRouter(prefix="/instruments", tags=["instruments"], responses=COMMON)
IdPath = Annotated[InstrumentId, Path(description="Instrument id.")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=WRITE,
    responses={**CONFLICT, **TOO_LARGE},
)
async def create_instrument(body: InstrumentCreate, runtime: RuntimeDep) -> InstrumentOut:
    async with runtime.transaction(write=True) as session:
        instrument = await InstrumentRepository(session).add(Instrument(**body.model_dump()))
        return InstrumentOut.model_validate(instrument)


@router.get("", dependencies=READ)
async def list_instruments(
    runtime: RuntimeDep,
    active: Annotated[bool | None, Query(description="Only active (or inactive) ones.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[InstrumentOut]:
    async with runtime.transaction() as session:
        page = await InstrumentRepository(session).find(
            active=active, limit=limit, after_id=id_cursor(cursor, LAST_INT_ID)
        )
        return page_of(InstrumentOut, page)


@router.get("/{instrument_id}", dependencies=READ, responses=NOT_FOUND)
async def get_instrument(instrument_id: IdPath, runtime: RuntimeDep) -> InstrumentOut:
    async with runtime.transaction() as session:
        return InstrumentOut.model_validate(await InstrumentRepository(session).get(instrument_id))


@router.patch("/{instrument_id}", dependencies=WRITE, responses={**NOT_FOUND, **TOO_LARGE})
async def update_instrument(
    instrument_id: IdPath, body: InstrumentUpdate, runtime: RuntimeDep
) -> InstrumentOut:
    """Deactivate (`{"is_active": false}`) or reactivate an instrument: an inactive one's
    ticks are refused on ingest."""
    async with runtime.transaction(write=True) as session:
        instrument = await InstrumentRepository(session).set_active(instrument_id, body.is_active)
        return InstrumentOut.model_validate(instrument)


@router.delete(
    "/{instrument_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=WRITE,
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_instrument(instrument_id: IdPath, runtime: RuntimeDep) -> Response:
    """Delete an instrument nothing refers to (one created by mistake). Anything that has
    ticks, rules or alert logs gets 409: deactivate it instead."""
    async with runtime.transaction(write=True) as session:
        await InstrumentRepository(session).delete(instrument_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
