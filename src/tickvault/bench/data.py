"""Throwaway databases at a given revision, filled in SQL (no row crosses to Python).

Every table is filled the same way at every revision: 50 instruments, one rule each,
``rows`` ticks 10 ms apart from 2024-01-02 00:00 UTC, and ``rows`` alert logs, with prices
of 4 decimals, so that DECIMAL and FLOAT tables hold the same values.
"""

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from tickvault.database.admin import create_database, drop_database
from tickvault.database.engine import create_engine
from tickvault.services import schema

INSTRUMENTS = 50
START_EPOCH = 1_704_153_600  # 2024-01-02 00:00:00 UTC
TICKS_PER_SECOND = 100  # one tick every 10 ms

_SEQUENCE = {
    "postgresql": "SELECT n FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) "
    "AS n",
    "sqlite": "WITH RECURSIVE seq(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM seq "
    "WHERE n < :last) SELECT n FROM seq",
}
_TIMESTAMP = {
    "postgresql": "to_timestamp(1704153600 + n / 100.0)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', 1704153600 + n / 100, 'unixepoch') "
    "|| printf('.%06d', (n % 100) * 10000)",
}
# Prices with 4 decimals between 10 and 1000; the same expression on both engines.
_PRICE = "round(10 + (n * 7919 % 9900000) / 10000.0, 4)"


def _tick_fill(dialect: str, instruments: int = INSTRUMENTS) -> str:
    return (
        "INSERT INTO market_data (instrument_id, timestamp, price, bid, ask, volume, "
        "created_at, updated_at) "
        f"SELECT 1 + n % {instruments}, {_TIMESTAMP[dialect]}, {_PRICE}, {_PRICE} - 0.01, "
        f"{_PRICE} + 0.01, 1 + n * 31 % 10000, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
        f"FROM ({_SEQUENCE[dialect]}) AS s"
    )


def _log_fill(dialect: str) -> str:
    return (
        "INSERT INTO alert_logs (rule_id, instrument_id, timestamp, trigger_value, "
        "threshold_value, fired_status, delivery_status, evaluation_time_ms, created_at, "
        "updated_at) "
        f"SELECT 1 + n % {INSTRUMENTS}, 1 + n % {INSTRUMENTS}, {_TIMESTAMP[dialect]}, "
        f"{_PRICE}, 500, "
        "CASE n % 3 WHEN 0 THEN 'fired' WHEN 1 THEN 'suppressed' ELSE 'cleared' END, "
        "CASE n % 5 WHEN 0 THEN 'pending' WHEN 1 THEN 'failed' ELSE 'sent' END, "
        f"0.05, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ({_SEQUENCE[dialect]}) AS s"
    )


async def fill(url: str, rows: int, chunk: int = 250_000) -> None:
    """Instruments, rules, and ``rows`` ticks and alert logs, in chunked transactions."""
    engine = create_engine(url)
    try:
        dialect = engine.dialect.name
        async with engine.begin() as connection:
            for i in range(1, INSTRUMENTS + 1):
                await connection.execute(
                    text("INSERT INTO instruments (id, symbol, name) VALUES (:i, :s, :s)"),
                    {"i": i, "s": f"S{i:02d}"},
                )
                await connection.execute(
                    text(
                        "INSERT INTO alert_rules (id, name, instrument_id, condition, threshold)"
                        " VALUES (:i, :s, :i, 'price_above', 500)"
                    ),
                    {"i": i, "s": f"rule {i}"},
                )
        for statement in (_tick_fill(dialect), _log_fill(dialect)):
            for first in range(0, rows, chunk):
                last = min(first + chunk, rows) - 1
                async with engine.begin() as connection:
                    await connection.execute(text(statement), {"first": first, "last": last})
        if dialect == "postgresql":
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


async def fill_one_instrument(url: str, rows: int, chunk: int = 250_000) -> None:
    """One instrument (id 1, ``S01``) and ``rows`` ticks of it, 10 ms apart, in SQL; the
    database at head."""
    engine = create_engine(url)
    try:
        dialect = engine.dialect.name
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO instruments (id, symbol, name) VALUES (1, 'S01', 'S01')")
            )
        for first in range(0, rows, chunk):
            async with engine.begin() as connection:
                await connection.execute(
                    text(_tick_fill(dialect, instruments=1)),
                    {"first": first, "last": min(first + chunk, rows) - 1},
                )
        if dialect == "postgresql":
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE market_data"))
    finally:
        await engine.dispose()


@contextmanager
def throwaway(engine: str, postgres_url: str | None, folder: Path | None = None) -> Iterator[str]:
    """An empty database of ``engine`` that is removed afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    assert postgres_url is not None
    name = f"tickvault_bench_{uuid.uuid4().hex[:10]}"
    url = asyncio.run(create_database(postgres_url, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(postgres_url, name))


def prepare(url: str, revision: str, rows: int) -> None:
    """Migrate an empty database to the baseline, fill it, then migrate it to ``revision``
    (as a database that lived through the chain would be)."""
    schema.upgrade(url, "4524473b46fb")
    asyncio.run(fill(url, rows))
    schema.upgrade(url, revision)
