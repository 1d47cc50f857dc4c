"""pytest-alembic's standard checks, on SQLite and PostgreSQL.

One head; base to head; the models match the head schema (autogenerate finds nothing,
FLOAT vs DECIMAL and ON DELETE included); every revision up, then down.
"""

import asyncio
from collections.abc import Iterator

import pytest
from alembic.config import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine
from tickvault.services.schema import alembic_config as _tickvault_alembic_config


@pytest.fixture
def alembic_config(database_url: str) -> Config:
    return _tickvault_alembic_config(database_url)


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    asyncio.run(engine.dispose())
