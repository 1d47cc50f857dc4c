"""Instruments: add, get, list; deactivated and reactivated through ``is_active``."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tickvault.errors import NotFoundError, StillReferenced
from tickvault.models import Instrument
from tickvault.repositories.base import (
    Page,
    add_row,
    by_id,
    check_limit,
    delete_unreferenced,
    fetch_page,
    get_row,
)


class InstrumentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, instrument: Instrument) -> Instrument:
        return await add_row(
            self.session,
            instrument,
            f"instrument {instrument.symbol!r}",
            foreign_key=StillReferenced,
            foreign_key_message="refers to a missing row",
        )

    async def get(self, instrument_id: int) -> Instrument:
        return await get_row(self.session, Instrument, instrument_id, "instrument")

    async def get_by_symbol(self, symbol: str) -> Instrument:
        query = select(Instrument).where(Instrument.symbol == symbol)
        instrument = await self.session.scalar(query)
        if instrument is None:
            raise NotFoundError(f"instrument {symbol!r} not found")
        return instrument

    async def ids_by_symbol(self, symbols: Sequence[str]) -> dict[str, tuple[int, bool]]:
        """symbol -> (id, is_active) for the symbols that exist."""
        rows = await self.session.execute(
            select(Instrument.symbol, Instrument.id, Instrument.is_active).where(
                Instrument.symbol.in_(list(symbols))
            )
        )
        return {symbol: (id_, active) for symbol, id_, active in rows}

    async def active_ids(self) -> set[int]:
        return set(await self.session.scalars(select(Instrument.id).where(Instrument.is_active)))

    async def find(
        self, *, active: bool | None = None, limit: int = 100, after_id: int | None = None
    ) -> Page[Instrument, int]:
        query = select(Instrument).order_by(Instrument.id).limit(check_limit(limit) + 1)
        if active is not None:
            query = query.where(Instrument.is_active.is_(active))
        if after_id is not None:
            query = query.where(Instrument.id > after_id)
        return await fetch_page(self.session, query, limit, by_id)

    async def set_active(self, instrument_id: int, active: bool) -> Instrument:
        instrument = await self.get(instrument_id)
        instrument.is_active = active
        await self.session.flush()
        return instrument

    async def delete(self, instrument_id: int) -> None:
        """Delete an instrument nothing refers to (one created by mistake, say).

        RESTRICT foreign keys refuse it while any tick, rule or alert log (soft-deleted ones
        too) refers to it: ``StillReferenced``; deactivate such an instrument instead.
        """
        instrument = await self.get(instrument_id)
        await delete_unreferenced(
            self.session,
            instrument,
            f"instrument {instrument_id}",
            "ticks, alert rules or alert logs",
        )
