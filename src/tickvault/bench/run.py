"""The benchmark run: every case, on each engine, side by side, repeated, medians kept.

::

    results = run(BenchConfig(postgres_url="postgresql://postgres@127.0.0.1/test"))
    results["engines"]["sqlite"]["insert"]["market_data"]["4524473b46fb"]["p50_ms"]

Per engine, four databases are filled alike and migrated to the baseline, to df856072bded
(the index reduction), to f79e2702f75c (soft delete) and to head (c2f8d4b6e913: the read
path of a7c3e9d15b42 and the write receipts); each insert case then runs on all four in
turn, ``repeat`` times, and the rows it added are deleted before the next turn.
"""

import asyncio
import platform
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text

from tickvault.bench import cases, data, live, load
from tickvault.database.engine import create_engine

BASELINE, INDEXES, SOFT_DELETE, HEAD = (
    "4524473b46fb",
    "df856072bded",
    "f79e2702f75c",
    "c2f8d4b6e913",
)
REVISIONS = (BASELINE, INDEXES, SOFT_DELETE, HEAD)
TABLES = ("market_data", "alert_logs")


@dataclass(frozen=True)
class BenchConfig:
    postgres_url: str | None = None  # a server where the user may create databases
    rows: int = 1_000_000  # already in each table before the insert cases
    single: int = 2_000  # one-row inserts per table, revision and repeat
    bulk: int = 1_000_000  # rows per bulk insert
    repeat: int = 3
    reads: int = 20  # runs of each read per repeat
    load_seconds: float = 10.0
    writers: tuple[int, ...] = (1, 16, 64)
    live_single: int = 1_000  # single ticks, live path vs ORM add + commit, each
    live_bulk: int = 200_000  # rows ingested in bulk, the stream's yardstick
    stream_messages: tuple[int, ...] = (100, 1)  # ticks per WebSocket message
    http_connections: int = 16
    only_load: bool = False  # skip the per-revision cases: fill head, measure the load

    @classmethod
    def quick(cls, postgres_url: str | None = None) -> "BenchConfig":
        """Small sizes: a smoke test of the whole run in well under a minute."""
        return cls(postgres_url, rows=5_000, single=30, bulk=5_000, repeat=1, reads=3,
                   load_seconds=1.0, writers=(1, 4), live_single=30,
                   live_bulk=2_000)  # fmt: skip


Step = Callable[[str], None]


def run(config: BenchConfig, step: Step = lambda _: None) -> dict[str, Any]:
    """Every case on SQLite, and on PostgreSQL when a server is given."""
    engines: dict[str, Any] = {"sqlite": _engine_run("sqlite", config, step)}
    if config.postgres_url:
        engines["postgresql"] = _engine_run("postgresql", config, step)
    else:
        engines["postgresql"] = {"skipped": "no PostgreSQL server given (--postgres-url)"}
    return {"machine": _machine(), "config": asdict(config), "engines": engines}


def steps(config: BenchConfig) -> int:
    """How many times ``run`` calls ``step``, for a progress bar."""
    n = len(REVISIONS)
    load = 2 * len(config.writers) + 3 + len(config.stream_messages)
    per_engine = 1 + load if config.only_load else n + config.repeat * n * len(TABLES) + 3 + load
    return per_engine * (2 if config.postgres_url else 1)


def _engine_run(engine: str, config: BenchConfig, step: Step) -> dict[str, Any]:
    if config.only_load:
        with data.throwaway(engine, config.postgres_url) as url:
            step(f"{engine}: filling {config.rows:,} rows per table at {HEAD}")
            data.prepare(url, HEAD, config.rows)
            return {"load": _load(engine, url, config, step)}
    with ExitStack() as stack:
        urls = {}
        for revision in REVISIONS:
            step(f"{engine}: filling {config.rows:,} rows per table at {revision}")
            urls[revision] = stack.enter_context(data.throwaway(engine, config.postgres_url))
            data.prepare(urls[revision], revision, config.rows)
        server = asyncio.run(server_version(urls[HEAD])) if engine == "postgresql" else None
        return {
            "server": server,
            "insert": _inserts(engine, urls, config, step),
            "read": asyncio.run(_reads(urls, config, step, engine)),
            "calculation": asyncio.run(_calculations(urls, config, step, engine)),
            "load": _load(engine, urls[HEAD], config, step),
        }


def _inserts(engine: str, urls: dict[str, str], config: BenchConfig, step: Step) -> dict[str, Any]:
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    for repeat in range(config.repeat):
        for revision in REVISIONS:  # in turn, so drift on the machine hits all four
            for table in TABLES:
                step(f"{engine}: {table} inserts at {revision} ({repeat + 1}/{config.repeat})")
                figures = asyncio.run(_insert_case(urls[revision], table, config))
                entry = samples.setdefault((table, revision), {})
                for name, value in figures.items():
                    entry.setdefault(name, []).append(value)
    return {
        table: {
            revision: {
                name: round(statistics.median(values), 4)
                for name, values in samples[table, revision].items()
            }
            for revision in REVISIONS
        }
        for table in TABLES
    }


async def _insert_case(url: str, table: str, config: BenchConfig) -> dict[str, float]:
    engine = create_engine(url)
    try:
        latencies = await cases.single_inserts(engine, table, config.single, first=0)
        await cases.remove_inserted(engine, table)
        rows_per_second = await cases.bulk_insert(engine, table, config.bulk, first=0)
        await cases.remove_inserted(engine, table)
    finally:
        await engine.dispose()
    return {**cases.percentiles(latencies), "bulk_rows_per_second": rows_per_second}


async def _reads(
    urls: dict[str, str], config: BenchConfig, step: Step, engine_name: str
) -> dict[str, Any]:
    step(f"{engine_name}: reads at every revision")
    samples: dict[tuple[str, str], list[float]] = {}
    engines = {revision: create_engine(url) for revision, url in urls.items()}
    try:
        for _ in range(config.repeat):
            for revision, engine in engines.items():
                for name in cases.READS:
                    ms = await cases.read_latency(engine, name, config.reads)
                    samples.setdefault((name, revision), []).append(ms)
    finally:
        for engine in engines.values():
            await engine.dispose()
    return {
        name: {r: round(statistics.median(samples[name, r]), 4) for r in REVISIONS}
        for name in cases.READS
    }


async def _calculations(
    urls: dict[str, str], config: BenchConfig, step: Step, engine_name: str
) -> dict[str, Any]:
    """DECIMAL (the baseline's prices) against FLOAT (head's), in SQL and in Python."""
    step(f"{engine_name}: avg, stddev and VWAP in SQL, DECIMAL vs FLOAT")
    out: dict[str, Any] = {"sql_ms": {}, "python_ms": {}}
    for label, revision in (("DECIMAL", BASELINE), ("FLOAT", HEAD)):
        engine = create_engine(urls[revision])
        try:
            out["sql_ms"][label] = round(await cases.sql_calculation(engine, config.repeat), 4)
            rows = await cases.fetch_prices(engine, exact=label == "DECIMAL")
        finally:
            await engine.dispose()
        out["python_ms"][label] = round(cases.python_calculation(rows, config.repeat), 4)
    step(f"{engine_name}: the same in Python on fetched values")
    return out


def _load(engine: str, url: str, config: BenchConfig, step: Step) -> dict[str, Any]:
    results: dict[str, Any] = {"service": [], "http": []}
    offset = 0
    for writers in config.writers:
        step(f"{engine}: {writers} writers through MarketDataService")
        result = asyncio.run(load.through_service(url, writers, config.load_seconds, offset))
        results["service"].append(result.summary())
        offset += 10_000_000
    with load.serving(url) as port:
        for writers in config.writers:
            step(f"{engine}: {writers} writers through the HTTP API")
            result = load.through_http(url, port, writers, config.load_seconds, offset)
            results["http"].append(result.summary())
            offset += 10_000_000
        results["stream"] = []
        for per_message in config.stream_messages:
            step(f"{engine}: WebSocket stream, {per_message} ticks a message, not waiting")
            figures = live.stream(url, port, per_message, config.load_seconds, offset)
            results["stream"].append(figures)
            offset += 100_000_000
    step(f"{engine}: bulk ingest of {config.live_bulk:,} rows (the stream's yardstick)")
    results["bulk_rows_per_second"] = asyncio.run(live.bulk_rate(url, config.live_bulk, offset))
    offset += 100_000_000
    for figures in results["stream"]:
        figures["ratio_to_bulk"] = round(
            figures["ticks_per_second"] / results["bulk_rows_per_second"], 3
        )
    step(f"{engine}: one producer, live path vs ORM add + commit")
    results["single"] = asyncio.run(live.single_vs_orm(url, config.live_single, offset))
    offset += 100_000_000
    step(f"{engine}: HTTP with wrk, tickvault vs a bare FastAPI endpoint")
    results["http_vs_bare"] = live.http_vs_bare(
        url, config.load_seconds, config.http_connections, offset
    )
    return results


def _machine() -> dict[str, Any]:
    import os
    import sqlite3

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
    }


async def server_version(url: str) -> str:
    """PostgreSQL's ``version()``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text("SELECT version()"))).scalar_one())
    finally:
        await engine.dispose()
