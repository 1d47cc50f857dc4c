"""What ``tickvault bench`` times on one database: inserts, reads, calculations.

Each function takes an engine on a prepared database (``bench.data``) and returns plain
numbers; the same SQL runs at every revision, so differences come from the schema.
"""

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.bench.data import INSTRUMENTS, START_EPOCH
from tickvault.database.bulk import sqlite_timestamp
from tickvault.database.types import UTCDateTime

# Inserted rows are stamped after the prefilled ones, one microsecond apart.
LATER = datetime.fromtimestamp(START_EPOCH, UTC) + timedelta(days=30)

TICK_COLUMNS = ("instrument_id", "timestamp", "price", "bid", "ask", "volume")
LOG_COLUMNS = (
    "rule_id", "instrument_id", "timestamp", "trigger_value", "threshold_value",
    "fired_status", "delivery_status", "evaluation_time_ms",
)  # fmt: skip


def _insert(table: str, columns: Sequence[str]) -> Any:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return text(
        f"INSERT INTO {table} ({names}, created_at, updated_at) VALUES ({values}, :now, :now)"
    ).bindparams(bindparam("timestamp", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


def tick_row(n: int) -> dict[str, Any]:
    price = round(10 + (n * 7919 % 9_900_000) / 10_000, 4)
    return {
        "instrument_id": 1 + n % INSTRUMENTS,
        "timestamp": LATER + timedelta(microseconds=n),
        "price": price,
        "bid": round(price - 0.01, 4),
        "ask": round(price + 0.01, 4),
        "volume": 1 + n * 31 % 10_000,
    }


def log_row(n: int) -> dict[str, Any]:
    return {
        "rule_id": 1 + n % INSTRUMENTS,
        "instrument_id": 1 + n % INSTRUMENTS,
        "timestamp": LATER + timedelta(microseconds=n),
        "trigger_value": round(10 + n % 990 + 0.1234, 4),
        "threshold_value": 500.0,
        "fired_status": ("fired", "suppressed", "cleared")[n % 3],
        "delivery_status": ("pending", "sent", "failed")[n % 3],
        "evaluation_time_ms": 0.05,
    }


ROWS: dict[str, tuple[Sequence[str], Callable[[int], dict[str, Any]]]] = {
    "market_data": (TICK_COLUMNS, tick_row),
    "alert_logs": (LOG_COLUMNS, log_row),
}


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)],
    }


async def single_inserts(engine: AsyncEngine, table: str, n: int, first: int) -> list[float]:
    """``n`` one-row INSERTs, each in its own committed transaction: latencies in ms."""
    columns, make = ROWS[table]
    statement = _insert(table, columns)
    now = datetime.now(UTC)
    latencies = []
    for i in range(first, first + n):
        params = {**make(i), "now": now}
        started = time.perf_counter()
        async with engine.begin() as connection:
            await connection.execute(statement, params)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def bulk_insert(engine: AsyncEngine, table: str, n: int, first: int) -> float:
    """``n`` rows in batches of 10,000 (COPY on PostgreSQL, executemany on SQLite): rows/s."""
    columns, make = ROWS[table]
    all_columns = (*columns, "created_at", "updated_at")
    now = datetime.now(UTC)
    records = [(*make(i).values(), now, now) for i in range(first, first + n)]
    started = time.perf_counter()
    for offset in range(0, n, 10_000):
        batch = records[offset : offset + 10_000]
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                raw: Any = (await connection.get_raw_connection()).driver_connection
                await raw.copy_records_to_table(table, records=batch, columns=all_columns)
            else:
                await connection.exec_driver_sql(
                    f"INSERT INTO {table} ({', '.join(all_columns)}) "
                    f"VALUES ({', '.join('?' for _ in all_columns)})",
                    [_sqlite_row(r) for r in batch],
                )
    return n / (time.perf_counter() - started)


def _sqlite_row(record: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(sqlite_timestamp(v) if isinstance(v, datetime) else v for v in record)


async def remove_inserted(engine: AsyncEngine, table: str, after: datetime = LATER) -> None:
    """Delete what the insert cases added, so every repeat starts from the same table."""
    async with engine.begin() as connection:
        await connection.execute(
            text(f"DELETE FROM {table} WHERE timestamp >= :t").bindparams(
                bindparam("t", type_=UTCDateTime())
            ),
            {"t": after},
        )
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f"VACUUM ANALYZE {table}"))


READS: dict[str, Any] = {
    # The query the dropped (instrument_id, timestamp DESC) index was made for.
    "latest tick, 50 instruments": text(
        "SELECT m.* FROM market_data m WHERE m.id IN (SELECT (SELECT x.id FROM market_data x "
        "WHERE x.instrument_id = i.id ORDER BY x.timestamp DESC, x.id DESC LIMIT 1) "
        "FROM instruments i)"
    ),
    "one hour of one instrument": text(
        "SELECT * FROM market_data WHERE instrument_id = 7 AND timestamp >= :start "
        "AND timestamp < :end ORDER BY timestamp"
    ).bindparams(bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())),
    "alert logs fired + pending": text(
        "SELECT * FROM alert_logs WHERE fired_status = 'fired' AND delivery_status = 'pending' "
        "ORDER BY timestamp DESC LIMIT 100"
    ),
}
_HOUR = {
    "start": datetime.fromtimestamp(START_EPOCH + 1800, UTC),
    "end": datetime.fromtimestamp(START_EPOCH + 5400, UTC),
}


async def read_latency(engine: AsyncEngine, name: str, repeat: int) -> float:
    """Median ms of the read ``name`` (rows fetched), after one warm-up run."""
    statement = READS[name]
    params = _HOUR if name.startswith("one hour") else {}
    times = []
    async with engine.connect() as connection:
        for i in range(repeat + 1):
            started = time.perf_counter()
            (await connection.execute(statement, params)).all()
            if i:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


_AGGREGATES = {
    "postgresql": "SELECT instrument_id, avg(price), stddev_pop(price), "
    "sum(price * volume) / sum(volume) FROM market_data GROUP BY instrument_id",
    # SQLite has no stddev: the variance, as E[x^2] - E[x]^2.
    "sqlite": "SELECT instrument_id, avg(price), avg(price * price) - avg(price) * avg(price), "
    "sum(price * volume) / sum(volume) FROM market_data GROUP BY instrument_id",
}


async def sql_calculation(engine: AsyncEngine, repeat: int) -> float:
    """Median ms of avg, standard deviation and VWAP per instrument, in SQL."""
    statement = text(_AGGREGATES[engine.dialect.name])
    return await median_ms(lambda: _fetch(engine, statement), repeat)


async def _fetch(engine: AsyncEngine, statement: Any) -> None:
    async with engine.connect() as connection:
        (await connection.execute(statement)).all()


async def fetch_prices(engine: AsyncEngine, exact: bool) -> list[tuple[int, Any, int]]:
    """(instrument, price, volume) of every tick; prices as Decimal when ``exact``."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT instrument_id, price, volume FROM market_data"))
        ).all()
    if exact:
        return [(i, p if isinstance(p, Decimal) else Decimal(str(p)), v) for i, p, v in rows]
    return [(i, float(p), v) for i, p, v in rows]


def python_calculation(rows: list[tuple[int, Any, int]], repeat: int) -> float:
    """Median ms of avg, standard deviation and VWAP per instrument, in Python."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        _per_instrument(rows)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _per_instrument(rows: list[tuple[int, Any, int]]) -> dict[int, tuple[Any, Any, Any]]:
    sums: dict[int, list[Any]] = {}
    for instrument, price, volume in rows:
        s = sums.get(instrument)
        if s is None:
            s = sums[instrument] = [0, 0, 0, 0, 0]  # n, sum, sum of squares, p*v, v
        s[0] += 1
        s[1] += price
        s[2] += price * price
        s[3] += price * volume
        s[4] += volume
    out = {}
    for instrument, (n, total, squares, pv, v) in sums.items():
        mean = total / n
        variance = max(squares / n - mean * mean, 0)
        deviation = variance.sqrt() if isinstance(variance, Decimal) else math.sqrt(variance)
        out[instrument] = (mean, deviation, pv / v)
    return out


async def median_ms(work: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median milliseconds of ``repeat`` runs of ``work``, after one untimed run."""
    await work()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
