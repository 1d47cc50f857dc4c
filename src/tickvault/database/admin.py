"""Create and drop PostgreSQL databases: throwaway databases for tests and benchmarks.

The name must be a plain identifier (letters, digits, underscores); it is quoted, never
taken from user input unchecked.
"""

import re

import asyncpg
from sqlalchemy.engine import URL, make_url

from tickvault.errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _check(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ConfigurationError(f"database name {name!r} is not a plain identifier")
    return name


async def _execute(server_url: str | URL, sql: str) -> None:
    dsn = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_database(server_url: str | URL, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; returns its URL."""
    await _execute(server_url, f'CREATE DATABASE "{_check(name)}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str | URL, name: str) -> None:
    """Drop database ``name``, closing its connections first; no error if it is gone."""
    await _execute(server_url, f'DROP DATABASE IF EXISTS "{_check(name)}" WITH (FORCE)')
