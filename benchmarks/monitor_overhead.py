"""What the performance monitor costs: inserts with and without it, side by side.

On each engine, into the head schema's market_data: N single-row inserts (each its own
transaction, as a tick feed writes them) and M rows bulk-inserted (executemany, batches of
10,000, one transaction each), once with the monitor attached to the engine and once
without, alternating which goes first; the median of the repeats is reported, and the
overhead (with / without - 1).

    python benchmarks/monitor_overhead.py --single 100000 --bulk 1000000 --repeat 3 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from _common import throwaway_database
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine
from tickvault.models import MarketData
from tickvault.services import schema
from tickvault.services.database_performance import DatabasePerformanceMonitor

BATCH = 10_000
START = datetime(2024, 1, 2, tzinfo=UTC)
INSERT = sa.insert(MarketData.__table__)


def _row(i: int) -> dict[str, object]:
    return {
        "instrument_id": 1 + i % 10,
        "timestamp": START + timedelta(microseconds=i),
        "price": 100 + (i % 997) / 100,
        "volume": i % 1000,
    }


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM market_data"))
        await connection.execute(sa.text("DELETE FROM instruments"))
        await connection.execute(
            sa.text(
                "INSERT INTO instruments (id, symbol, name) VALUES "
                + ", ".join(f"({i}, 'S{i}', 'S{i}')" for i in range(1, 11))
            )
        )


async def single_inserts(engine: AsyncEngine, n: int) -> float:
    async with engine.connect() as connection:
        started = time.perf_counter()
        for i in range(n):
            await connection.execute(INSERT, _row(i))
            await connection.commit()
        return n / (time.perf_counter() - started)


async def bulk_insert(engine: AsyncEngine, n: int) -> float:
    rows = [_row(i) for i in range(n)]
    started = time.perf_counter()
    for offset in range(0, n, BATCH):
        async with engine.begin() as connection:
            await connection.execute(INSERT, rows[offset : offset + BATCH])
    return n / (time.perf_counter() - started)


async def measure(
    url: str, workload: Callable[[AsyncEngine, int], object], n: int, monitored: bool
) -> float:
    engine = create_engine(url)
    monitor = DatabasePerformanceMonitor(engine) if monitored else None
    try:
        await _reset(engine)
        rate = await workload(engine, n)  # type: ignore[misc]
        if monitor is not None:
            metrics = await monitor.collect_metrics()
            assert metrics.total_rows_inserted >= n, "the monitor missed rows"
        return float(rate)
    finally:
        if monitor is not None:
            monitor.uninstrument()
        await engine.dispose()


def hot_path_cost_us(n: int = 200_000) -> float:
    """Microseconds the monitor adds per statement: the event handlers' bookkeeping."""
    monitor = DatabasePerformanceMonitor()
    monitor.instrument(sa.create_engine("sqlite://"))
    statement = str(INSERT.compile(dialect=sa.create_engine("sqlite://").dialect))
    info: dict[str, list[float]] = {}
    started = time.perf_counter()
    for _ in range(n):
        info.setdefault("t", []).append(time.perf_counter())  # what "before" does
        duration = (time.perf_counter() - info["t"].pop()) * 1000  # what "after" does
        monitor.record_statement(statement, duration, 1, 5)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=100_000)
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    engines = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    results: dict[tuple[str, str, bool], list[float]] = {}
    for engine_name in engines:
        with throwaway_database(engine_name, args.postgres_url) as url:
            schema.upgrade(url)
            for label, workload, n in (
                ("single", single_inserts, args.single),
                ("bulk", bulk_insert, args.bulk),
            ):
                for repeat in range(args.repeat):
                    order = (False, True) if repeat % 2 == 0 else (True, False)
                    for monitored in order:
                        rate = asyncio.run(measure(url, workload, n, monitored))
                        results.setdefault((engine_name, label, monitored), []).append(rate)
                        state = "on " if monitored else "off"
                        print(
                            f"{engine_name:<10} {label:<6} monitor={state} {rate:>10,.0f} rows/s",
                            flush=True,
                        )
    print(f"\nthe monitor's own work per statement: {hot_path_cost_us():.2f} µs")
    print(
        f"median of {args.repeat}; single = {args.single:,} one-row transactions, "
        f"bulk = {args.bulk:,} rows in batches of {BATCH:,}"
    )
    print(f"{'engine':<11}{'path':<8}{'off rows/s':>12}{'on rows/s':>12}{'overhead':>10}")
    for engine_name in engines:
        for label in ("single", "bulk"):
            off = statistics.median(results[(engine_name, label, False)])
            on = statistics.median(results[(engine_name, label, True)])
            print(f"{engine_name:<11}{label:<8}{off:>12,.0f}{on:>12,.0f}{off / on - 1:>+10.1%}")


if __name__ == "__main__":
    main()
