"""Throwaway databases for the benchmarks: a SQLite file or a PostgreSQL database."""

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tickvault.database.admin import create_database, drop_database


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
    url = asyncio.run(create_database(postgres_url, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(postgres_url, name))
