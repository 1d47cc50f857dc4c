"""ReadSessions without a database: a replica URL that is not PostgreSQL is refused."""

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from tickvault.database.replica import ReadSessions
from tickvault.errors import ConfigurationError


@pytest.mark.parametrize("url", ["sqlite:///replica.db", "sqlite+aiosqlite:///:memory:"])
def test_a_replica_url_that_is_not_postgresql_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="replicas are PostgreSQL streaming standbys"):
        ReadSessions(async_sessionmaker(), url)


async def test_without_a_replica_there_is_nothing_to_report() -> None:
    reads = ReadSessions(async_sessionmaker(), None)
    assert reads.replica is None
    assert await reads.replication(None) is None  # type: ignore[arg-type]
