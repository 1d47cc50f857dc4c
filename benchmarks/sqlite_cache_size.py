"""SQLite page cache: bulk inserts into the baseline's 5-index market_data, 2 MB vs 256 MB.

Each run migrates a fresh SQLite file to the baseline (4524473b46fb: 5 indexes on
market_data) and bulk-inserts the same rows through tickvault's engine, in batches of
10,000, one transaction each. Runs alternate between the two cache sizes; the median of
each is reported, and their ratio.

    python benchmarks/sqlite_cache_size.py --rows 1000000 --repeat 3
"""

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from tickvault.database.engine import create_engine
from tickvault.services import schema
from tickvault.settings import get_settings

BATCH = 10_000
INSTRUMENTS = 50


def _rows(n: int) -> list[dict[str, object]]:
    rng = random.Random(3)
    start = datetime(2024, 1, 2, tzinfo=UTC)
    rows = []
    for i in range(n):
        price = round(rng.uniform(1, 1000), 4)
        rows.append(
            {
                "instrument_id": 1 + rng.randrange(INSTRUMENTS),
                "timestamp": start + timedelta(microseconds=500 * i),
                "price": price,
                "bid": price - 0.01,
                "ask": price + 0.01,
                "volume": rng.randint(1, 10**4),
            }
        )
    return rows


async def _insert(url: str, rows: list[dict[str, object]]) -> float:
    engine = create_engine(url)
    table = sa.table("market_data", *(sa.column(c) for c in rows[0]))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO instruments (id, symbol, name) VALUES "
                    + ", ".join(f"({i}, 'S{i}', 'S{i}')" for i in range(1, INSTRUMENTS + 1))
                )
            )
        started = time.perf_counter()
        for offset in range(0, len(rows), BATCH):
            async with engine.begin() as connection:
                await connection.execute(table.insert(), rows[offset : offset + BATCH])
        return len(rows) / (time.perf_counter() - started)
    finally:
        await engine.dispose()


def run_once(cache_mb: int, rows: list[dict[str, object]], folder: Path) -> float:
    os.environ["TICKVAULT_SQLITE_CACHE_SIZE_MB"] = str(cache_mb)
    get_settings.cache_clear()
    path = folder / f"cache-{cache_mb}.db"
    for leftover in folder.glob(f"cache-{cache_mb}.db*"):
        leftover.unlink()
    url = f"sqlite:///{path}"
    schema.upgrade(url, "4524473b46fb")
    return asyncio.run(_insert(url, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 256], help="cache sizes, MB")
    args = parser.parse_args()
    rows = _rows(args.rows)
    rates: dict[int, list[float]] = {size: [] for size in args.sizes}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeat):
            for cache_mb in rates:
                rate = run_once(cache_mb, rows, Path(folder))
                rates[cache_mb].append(rate)
                print(f"run {i + 1}: cache {cache_mb:>3} MB  {rate:>10,.0f} rows/s", flush=True)
    smallest = statistics.median(rates[min(rates)])
    print(f"\n{args.rows:,} rows into market_data with 5 indexes, median of {args.repeat}:")
    for size, measured in rates.items():
        rate = statistics.median(measured)
        print(f"  {size:>4} MB cache {rate:>10,.0f} rows/s  {rate / smallest:.2f}x")


if __name__ == "__main__":
    main()
