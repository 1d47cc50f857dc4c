"""What the performance monitor costs: inserts with and without it, side by side.

On each engine, two engines on the same throwaway database, one with the monitor attached
and one without, take turns block by block writing into the head schema's market_data:

- single: one-row INSERT + COMMIT (as a tick feed writes), blocks of 1,000;
- bulk: executemany of 10,000 rows per transaction, blocks of 50,000 rows.

Alternating blocks cancel the machine's drift (other load, the table growing); the median
block rate of each side is reported, and the overhead (off / on - 1).

    python benchmarks/monitor_overhead.py --single 100000 --bulk 1000000 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from _common import throwaway_database
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine
from tickvault.models import MarketData
from tickvault.services import schema
from tickvault.services.database_performance import DatabasePerformanceMonitor

START = datetime(2024, 1, 2, tzinfo=UTC)
INSERT = sa.insert(MarketData.__table__)
SINGLE_BLOCK = 1_000
BULK_BATCH = 10_000
BULK_BLOCK = 50_000


def _rows(start: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "instrument_id": 1 + i % 10,
            "timestamp": START + timedelta(microseconds=i),
            "price": 100 + (i % 997) / 100,
            "volume": i % 1000,
        }
        for i in range(start, start + n)
    ]


async def single_block(engine: AsyncEngine, start: int) -> float:
    rows = _rows(start, SINGLE_BLOCK)
    async with engine.connect() as connection:
        began = time.perf_counter()
        for row in rows:
            await connection.execute(INSERT, row)
            await connection.commit()
        return SINGLE_BLOCK / (time.perf_counter() - began)


async def bulk_block(engine: AsyncEngine, start: int) -> float:
    rows = _rows(start, BULK_BLOCK)
    began = time.perf_counter()
    for offset in range(0, BULK_BLOCK, BULK_BATCH):
        async with engine.begin() as connection:
            await connection.execute(INSERT, rows[offset : offset + BULK_BATCH])
    return BULK_BLOCK / (time.perf_counter() - began)


async def compare(url: str, label: str, total_rows: int) -> tuple[float, float]:
    plain, measured = create_engine(url), create_engine(url)
    monitor = DatabasePerformanceMonitor(measured)
    block, rows_per_block = (
        (single_block, SINGLE_BLOCK) if label == "single" else (bulk_block, BULK_BLOCK)
    )
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        async with plain.begin() as connection:
            await connection.execute(sa.text("DELETE FROM market_data"))
        position = 0
        for i in range(max(1, total_rows // rows_per_block)):
            order = (False, True) if i % 2 == 0 else (True, False)
            for monitored in order:
                rate = await block(measured if monitored else plain, position)
                rates[monitored].append(rate)
                position += rows_per_block
        # The run may outlast the monitor's trailing window: count since the start.
        seen = (await monitor.collect_metrics()).total_rows_inserted
        assert seen == total_rows // rows_per_block * rows_per_block, "the monitor missed rows"
    finally:
        monitor.uninstrument()
        await plain.dispose()
        await measured.dispose()
    return statistics.median(rates[False]), statistics.median(rates[True])


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
    parser.add_argument("--single", type=int, default=100_000, help="rows per side")
    parser.add_argument("--bulk", type=int, default=1_000_000, help="rows per side")
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    engines = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    results = []
    for engine_name in engines:
        with throwaway_database(engine_name, args.postgres_url) as url:
            schema.upgrade(url)

            async def seed(url: str = url) -> None:
                engine = create_engine(url)
                async with engine.begin() as connection:
                    await connection.execute(
                        sa.text(
                            "INSERT INTO instruments (id, symbol, name) VALUES "
                            + ", ".join(f"({i}, 'S{i}', 'S{i}')" for i in range(1, 11))
                        )
                    )
                await engine.dispose()

            asyncio.run(seed())
            for label, rows in (("single", args.single), ("bulk", args.bulk)):
                off, on = asyncio.run(compare(url, label, rows))
                results.append((engine_name, label, rows, off, on))
                print(
                    f"{engine_name:<11}{label:<7} off {off:>10,.0f}  on {on:>10,.0f} rows/s",
                    flush=True,
                )
    print(f"\nthe monitor's own work per statement: {hot_path_cost_us():.2f} µs")
    print("median block rate per side; rows per side as given")
    print(
        f"{'engine':<11}{'path':<7}{'rows':>10}{'off rows/s':>12}{'on rows/s':>12}{'overhead':>10}"
    )
    for engine_name, label, rows, off, on in results:
        print(
            f"{engine_name:<11}{label:<7}{rows:>10,}{off:>12,.0f}{on:>12,.0f}{off / on - 1:>+10.1%}"
        )


if __name__ == "__main__":
    main()
