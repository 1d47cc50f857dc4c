"""Instruments cached in the process, so validating a live tick costs no query.

::

    catalog = InstrumentCatalog(engine)
    record = await catalog.validate({"symbol": "AAPL", "timestamp": now, "price": 189.2})

The cache is reloaded before the next tick after ``invalidate()`` (call it after changing an
instrument in this process) and when a tick names an instrument it does not know (at most
once per ``MISS_RELOAD_SECONDS``, so a stream of unknown ids costs no query per tick); and in
the background, without holding up any tick, when it is older than ``TTL_SECONDS``. An
instrument created by another process is found within ``MISS_RELOAD_SECONDS``; one
deactivated there is refused within about ``TTL_SECONDS``.
"""

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.bulk import TickRecord
from tickvault.models import Instrument
from tickvault.services.validation import RowError, TickValidator

TTL_SECONDS = 2.0
MISS_RELOAD_SECONDS = 0.5


class InstrumentCatalog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._validator: TickValidator | None = None
        self._loaded_at = 0.0
        self._loading = asyncio.Lock()  # one reload at a time, shared by all who wait
        self._refresh: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop a background reload, if one runs."""
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh

    def invalidate(self) -> None:
        self._validator = None

    async def validator(self) -> TickValidator:
        """A validator over the cached instruments."""
        if self._validator is None:
            await self._load()
        elif time.monotonic() - self._loaded_at >= TTL_SECONDS and (
            self._refresh is None or self._refresh.done()
        ):
            self._refresh = asyncio.create_task(self._background(), name="tickvault-instruments")
        assert self._validator is not None
        return self._validator

    async def validate(self, row: Mapping[str, Any]) -> TickRecord:
        """``row`` as a record, or ``RowError`` with the reason."""
        validate = await self.validator()
        try:
            return validate(row)
        except RowError as exc:
            if "unknown instrument" not in str(exc):
                raise
            if time.monotonic() - self._loaded_at < MISS_RELOAD_SECONDS:
                raise
        await self._load()
        assert self._validator is not None
        return self._validator(row)

    async def _load(self) -> None:
        started = time.monotonic()
        async with self._loading:
            if self._validator is not None and self._loaded_at >= started:
                return  # someone reloaded while this one waited
            await self._reload()

    async def _background(self) -> None:
        try:
            await self._load()
        except Exception:  # the next tick that needs the instruments will say why
            return

    async def _reload(self) -> None:
        try:
            async with self.engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(Instrument.id, Instrument.symbol, Instrument.is_active)
                    )
                ).all()
        except Exception:
            if self._validator is None:
                raise
            # The database is away: the instruments we know are still the best guess; try
            # again in MISS_RELOAD_SECONDS rather than on every tick.
            self._loaded_at = time.monotonic() - TTL_SECONDS + MISS_RELOAD_SECONDS
            return
        self._validator = TickValidator(
            instruments={id_: active for id_, _, active in rows},
            symbols={symbol: id_ for id_, symbol, _ in rows},
        )
        self._loaded_at = time.monotonic()
