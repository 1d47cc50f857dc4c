"""Throwaway databases for the benchmarks: a SQLite file or a PostgreSQL database."""

from contextlib import AbstractContextManager

from tickvault.bench.data import throwaway


def throwaway_database(engine: str, postgres_url: str | None = None) -> AbstractContextManager[str]:
    """The URL of an empty database that is deleted afterwards."""
    if engine != "sqlite" and not postgres_url:
        raise ValueError("a PostgreSQL benchmark needs --postgres-url")
    return throwaway(engine, postgres_url)
