"""Throwaway databases for the benchmarks: a SQLite file or a PostgreSQL database."""

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url


async def _admin(url: str, sql: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def throwaway_database(engine: str, postgres_url: str | None = None) -> Iterator[str]:
    """The URL of an empty database that is deleted afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    if not postgres_url:
        raise ValueError("a PostgreSQL benchmark needs --postgres-url")
    name = f"tickvault_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgres_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
