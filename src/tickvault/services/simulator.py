"""A simulated market feed: random walks for a set of instruments, written through
``MarketDataService`` at a steady rate, so alert rules fire and the monitor has work.

::

    feed = FeedSimulator(service, rate=50)
    await feed.run(duration=10)         # or run() until cancelled
    feed.stats.ticks, feed.stats.alerts

The pace comes from a ``Clock`` (default ``SystemClock``); a test hands in one that advances
when slept on, and gets an exact tick count whatever the machine's load.

Ticks go through the live writer (``MarketDataService.store``). When the database is away
the feed does not stop: it waits (``RETRY_SECONDS``) and tries again, and resumes by itself
when the database answers; ``flowing`` says whether it stored ticks lately.
"""

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select

from tickvault.database.types import utcnow
from tickvault.errors import DatabaseError, ValidationError
from tickvault.models import Instrument
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services.demo import STARTING_PRICE
from tickvault.services.market_data import MarketDataService

STEPS_PER_SECOND = 10
VOLATILITY = 0.0005  # standard deviation of one tick's log return
RETRY_SECONDS = 0.25  # between attempts while the database is away
STALL_SECONDS = 2.0  # no tick stored for this long: the feed is not flowing
logger = logging.getLogger(__name__)


class Clock(Protocol):
    """What paces the feed: seconds from an arbitrary origin, and a way to wait."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class FeedStats:
    ticks: int = 0
    rejected: int = 0
    alerts: int = 0
    batches: int = 0
    failures: int = 0  # batches the database could not take (retried)
    last_stored: float | None = None  # time.monotonic() of the last stored batch
    last_error: str | None = None


class FeedSimulator:
    """``rate`` ticks a second spread over the first ``instruments`` active instruments."""

    def __init__(
        self,
        service: MarketDataService,
        *,
        rate: float = 50.0,
        instruments: int | None = None,
        seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < rate <= 100_000:
            raise ValidationError(f"rate must be between 0 and 100,000 ticks/s, got {rate}")
        if instruments is not None and instruments < 1:
            raise ValidationError(f"instruments must be at least 1, got {instruments}")
        self.service = service
        self.rate = rate
        self.instruments = instruments
        self.stats = FeedStats()
        self._random = random.Random(seed)
        self._clock = clock if clock is not None else SystemClock()
        self._prices: dict[int, float] = {}

    @property
    def flowing(self) -> bool:
        last = self.stats.last_stored
        return last is not None and time.monotonic() - last < STALL_SECONDS

    async def run(self, duration: float | None = None) -> FeedStats:
        """Feed until ``duration`` seconds have passed (or until cancelled)."""
        while True:
            try:
                await self._load_instruments()
                break
            except ValidationError:
                raise
            except Exception as exc:  # the database is away: try again
                self.stats.last_error = str(exc).splitlines()[0] if str(exc) else repr(exc)
                await asyncio.sleep(RETRY_SECONDS)
        clock = self._clock
        started = clock.now()
        owed = 0.0
        step = 1 / STEPS_PER_SECOND
        next_step = started
        while duration is None or clock.now() - started < duration:
            owed += self.rate * step
            count, owed = int(owed), owed - int(owed)
            if count:
                await self._emit(count)
            next_step += step
            await clock.sleep(max(0.0, next_step - clock.now()))
        return self.stats

    async def _load_instruments(self) -> None:
        async with self.service.session_factory() as session:
            query = select(Instrument.id, Instrument.symbol).where(Instrument.is_active)
            rows = (await session.execute(query.order_by(Instrument.id))).all()
            if self.instruments is not None:
                rows = rows[: self.instruments]
            if not rows:
                raise ValidationError("no active instruments to simulate: run `tickvault seed`")
            latest = await MarketDataRepository(session).latest([id_ for id_, _ in rows])
        last_price = {tick.instrument_id: tick.price for tick in latest if tick.price}
        self._prices = {
            id_: last_price.get(id_) or STARTING_PRICE.get(symbol, 100.0) for id_, symbol in rows
        }

    async def _emit(self, count: int) -> None:
        now = utcnow()
        ids = list(self._prices)
        ticks = []
        for n in range(count):
            instrument_id = ids[self._random.randrange(len(ids))]
            price = self._prices[instrument_id] * math.exp(self._random.gauss(0, VOLATILITY))
            self._prices[instrument_id] = price
            half_spread = price * self._random.uniform(0.00005, 0.0003)
            ticks.append(
                {
                    "instrument_id": instrument_id,
                    # Distinct, increasing timestamps within one step keep the order.
                    "timestamp": now + timedelta(microseconds=n),
                    "price": round(price, 4),
                    "bid": round(price - half_spread, 4),
                    "ask": round(price + half_spread, 4),
                    "volume": int(self._random.paretovariate(1.5) * 100),
                }
            )
        while True:
            try:
                report = await self.service.store(ticks)
                break
            except DatabaseError as exc:
                if self.stats.last_error != str(exc):
                    logger.warning("simulated feed: %s; retrying", exc)
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                await asyncio.sleep(RETRY_SECONDS)
        self.stats.ticks += report.accepted
        self.stats.rejected += report.rejected
        self.stats.alerts += report.alerts
        self.stats.batches += 1
        if report.accepted:
            self.stats.last_stored = time.monotonic()
            self.stats.last_error = None
