"""What a running API holds: the engine, the session factory, the services, the monitor."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.engine import write_session
from tickvault.database.replica import ReadSessions
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService
from tickvault.services.simulator import FeedSimulator
from tickvault.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    monitor: DatabasePerformanceMonitor
    market_data: MarketDataService
    feed: FeedSimulator | None = None
    # Read-only units of work: the read replica when one is set and reachable.
    reads: ReadSessions | None = None

    @asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back if it raises.

        ``write=True`` for one that reads and then writes (see ``write_session``), on the
        primary; after it commits, the live writer reloads the instruments and alert rules it
        caches. Otherwise read-only: on the read replica when one is set and reachable.
        """
        if write:
            async with write_session(self.session_factory) as session:
                yield session
            self.market_data.reload_catalog()
            return
        if self.reads is None:
            async with self.session_factory.begin() as session:
                yield session
            return
        async with self.reads.begin() as session:
            yield session


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
