"""Fixtures shared by every test: one database per test, on SQLite and on PostgreSQL.

``database_url`` is parametrized over both engines. PostgreSQL needs
``TICKVAULT_TEST_POSTGRES_URL`` (a server where the user may CREATE DATABASE); without it
those tests are skipped, unless ``TICKVAULT_REQUIRE_POSTGRES=1`` (CI), which fails them.
"""

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.bench.data import throwaway
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.services import schema

ENGINES = ["sqlite", "postgresql"]


def postgres_admin_url() -> str:
    url = os.environ.get("TICKVAULT_TEST_POSTGRES_URL")
    if not url:
        message = "PostgreSQL tests need TICKVAULT_TEST_POSTGRES_URL"
        if os.environ.get("TICKVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (TICKVAULT_REQUIRE_POSTGRES=1 forbids skipping)")
        pytest.skip(message)
    return url


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """An empty database of its own: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/tickvault-test.db"
        return
    with throwaway("postgresql", postgres_admin_url()) as url:
        yield url


@pytest.fixture
def twin_head_url(database_url: str) -> Iterator[str]:
    """A second empty database on the same engine as ``database_url``, migrated to head."""
    engine = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    with throwaway(engine, postgres_admin_url() if engine == "postgresql" else None) as url:
        schema.upgrade(url, "head")
        yield url


@pytest.fixture
def head_url(database_url: str) -> str:
    """A database migrated to head."""
    schema.upgrade(database_url, "head")
    return database_url


@pytest.fixture
async def engine(head_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(head_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)
