"""Read-only units of work on a streaming replica, falling back to the primary.

::

    reads = ReadSessions(create_session_factory(primary), replica_url="postgresql://…")
    async with reads.begin() as session:          # the replica, or the primary if it is down
        ticks = await MarketDataRepository(session).latest()
    status = await reads.replication(primary)     # how far behind the replica is

Writes, and reads that must see a write just made (the live writer's alert rules and
idempotency receipts, the rows a write answers with), stay on the primary: only what is
handed a session from ``begin()`` reads the replica, and a replica can be a little behind.
"""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.url import display_url, to_async_url
from tickvault.errors import ConfigurationError

logger = logging.getLogger(__name__)

# After a failed connection, reads go to the primary for this long before the replica is
# tried again: a replica that drops packets would otherwise cost every read its timeout.
RETRY_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0

LAG_SQL = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    # Nothing received is waiting to be replayed: caught up with what the primary sent.
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)


@dataclass(frozen=True)
class Replication:
    """The replica as seen now: ``streaming`` (a standby, lag known), ``unreachable``, or
    ``not a standby`` (the URL names a server that takes writes)."""

    state: Literal["streaming", "unreachable", "not a standby"]
    url: str
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    detail: str | None = None


class ReadSessions:
    """Sessions for read-only work: on the replica when one is given and answers, else on
    the primary's ``session_factory``. Without a replica, exactly the primary's sessions."""

    def __init__(
        self, primary: async_sessionmaker[AsyncSession], replica_url: str | None = None
    ) -> None:
        self.primary = primary
        self.replica_engine: AsyncEngine | None = None
        self.replica: async_sessionmaker[AsyncSession] | None = None
        self._down_until = 0.0
        if replica_url:
            if to_async_url(replica_url).get_backend_name() != "postgresql":
                raise ConfigurationError(
                    f"read replica {display_url(replica_url)}: replicas are PostgreSQL "
                    "streaming standbys (a SQLite database has none)"
                )
            # pre_ping: a pooled connection to a replica restarted since is replaced before
            # it is used, not found dead in the middle of a read.
            self.replica_engine = create_engine(
                replica_url,
                pool_pre_ping=True,
                connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
            )
            self.replica = create_session_factory(self.replica_engine)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """One read-only unit of work (committed when the block ends, like
        ``session_factory.begin()``), on the replica if it can be reached now."""
        session = await self._replica_session()
        if session is None:
            async with self.primary.begin() as session:
                yield session
            return
        async with session:  # closing it rolls back if the block raised
            yield session
            await session.commit()

    async def _replica_session(self) -> AsyncSession | None:
        if self.replica is None or time.monotonic() < self._down_until:
            return None
        session = self.replica()
        try:
            await session.connection()
        except (DBAPIError, OSError, TimeoutError) as exc:
            await session.close()
            self._down_until = time.monotonic() + RETRY_SECONDS
            logger.warning("read replica unreachable, reading from the primary: %s", _first(exc))
            return None
        return session

    async def replication(self, primary: AsyncEngine) -> Replication | None:
        """How far the replica is behind ``primary`` (None without a replica): seconds since
        the last transaction it replayed, when it has received WAL it has not replayed yet
        (0 when caught up), and bytes of the primary's WAL it has not replayed."""
        if self.replica_engine is None:
            return None
        url = display_url(self.replica_engine.url)
        try:
            async with self.replica_engine.connect() as connection:
                standby, replayed, seconds = (await connection.execute(LAG_SQL)).one()
        except (DBAPIError, OSError, TimeoutError) as exc:
            return Replication("unreachable", url, detail=_first(exc))
        if not standby:
            return Replication("not a standby", url, detail="the replica URL takes writes")
        async with primary.connect() as connection:
            behind = await connection.scalar(
                text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:lsn AS pg_lsn))"),
                {"lsn": replayed},
            )
        return Replication("streaming", url, float(seconds or 0), max(int(behind or 0), 0))

    async def aclose(self) -> None:
        if self.replica_engine is not None:
            await self.replica_engine.dispose()


def _first(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__
