"""Ingestion measured against the raw drivers and the ORM, on SQLite and PostgreSQL.

In one run, on a throwaway database per engine (head schema, 50 instruments):

1. bulk: ``MarketDataService.ingest`` (validation and the monitor on) vs the raw driver
   writing the same rows (asyncpg ``copy_records_to_table``; sqlite3 ``executemany`` in one
   transaction, the connection configured as tickvault's own), alternating, medians of
   ``--repeat`` rounds; vs SQLAlchemy ORM ``add_all`` (fewer rows: it is the slow path);
   rows/s and the ratios (goals: >= 0.8x raw, >= 10x ORM);
2. single: ``insert_market_data`` vs plain async ORM ``add`` + ``commit``, p50 and p99 over
   N ticks, alternating (goal: ratio <= 1.0);
3. latest: ``MarketDataRepository.latest`` for 50 instruments on the filled table;
4. memory: peak RSS of a separate process ingesting a CSV file of N rows (goal < 300 MB).

    python benchmarks/ingest.py --bulk 1000000 --repeat 3 --single 5000 \
        --latest-rows 5000000 --csv-rows 5000000 --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import csv
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from _common import throwaway_database
from sqlalchemy.engine import make_url

from tickvault.database.bulk import TICK_COLUMNS, sqlite_timestamp
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.models import MarketData
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services import schema
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService
from tickvault.settings import get_settings

INSTRUMENTS = 50
START = datetime(2024, 1, 2, tzinfo=UTC)


def ticks(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        price = round(rng.uniform(10, 1000), 4)
        out.append(
            {
                "instrument_id": 1 + i % INSTRUMENTS,
                "timestamp": START + timedelta(microseconds=137 * i),
                "price": price,
                "bid": round(price - 0.01, 4),
                "ask": round(price + 0.01, 4),
                "open_price": None,
                "high_price": None,
                "low_price": None,
                "volume": rng.randint(1, 10_000),
            }
        )
    return out


def as_records(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in TICK_COLUMNS) for row in rows]


async def reset(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM market_data"))
        if not (await connection.execute(sa.text("SELECT count(*) FROM instruments"))).scalar():
            await connection.execute(
                sa.text(
                    "INSERT INTO instruments (id, symbol, name) VALUES "
                    + ", ".join(f"({i}, 'S{i}', 'S{i}')" for i in range(1, INSTRUMENTS + 1))
                )
            )
    await engine.dispose()


async def raw_driver(url: str, rows: list[dict[str, Any]]) -> float:
    parsed = make_url(url)
    records = as_records(rows)
    if parsed.get_backend_name() == "postgresql":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn)
        started = time.perf_counter()
        for offset in range(0, len(records), 10_000):
            await connection.copy_records_to_table(
                "market_data", records=records[offset : offset + 10_000], columns=TICK_COLUMNS
            )
        elapsed = time.perf_counter() - started
        await connection.close()
        return len(rows) / elapsed
    connection = sqlite3.connect(str(parsed.database), isolation_level=None)
    # Configured as tickvault configures its own connections (database/engine.py): foreign
    # keys enforced, WAL, synchronous=NORMAL, the same page cache. Same database, same work.
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA cache_size=-{get_settings().sqlite_cache_size_mb * 1024}")
    marks = ", ".join("?" * len(TICK_COLUMNS))
    sql = f"INSERT INTO market_data ({', '.join(TICK_COLUMNS)}) VALUES ({marks})"
    started = time.perf_counter()
    for offset in range(0, len(records), 10_000):
        batch = [(r[0], sqlite_timestamp(r[1]), *r[2:]) for r in records[offset : offset + 10_000]]
        connection.execute("BEGIN")
        connection.executemany(sql, batch)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return len(rows) / elapsed


async def tickvault_ingest(url: str, rows: list[dict[str, Any]]) -> float:
    engine = create_engine(url)
    monitor = DatabasePerformanceMonitor(engine)
    service = MarketDataService(create_session_factory(engine))
    started = time.perf_counter()
    report = await service.ingest(rows, batch_size=10_000)
    elapsed = time.perf_counter() - started
    assert report.accepted == len(rows), report
    assert (await monitor.collect_metrics()).total_rows_inserted == len(rows)
    monitor.uninstrument()
    await engine.dispose()
    return len(rows) / elapsed


async def orm_add_all(url: str, rows: list[dict[str, Any]]) -> float:
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    started = time.perf_counter()
    for offset in range(0, len(rows), 10_000):
        async with sessions.begin() as session:
            session.add_all(MarketData(**row) for row in rows[offset : offset + 10_000])
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return len(rows) / elapsed


async def single_latency(url: str, n: int) -> dict[str, list[float]]:
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    service = MarketDataService(sessions)
    times: dict[str, list[float]] = {"service": [], "orm": []}
    for i, row in enumerate(ticks(2 * n, seed=2)):
        started = time.perf_counter()
        if i % 2 == 0:
            await service.insert_market_data(row)
            times["service"].append((time.perf_counter() - started) * 1000)
        else:
            async with sessions() as session:
                session.add(MarketData(**row))
                await session.commit()
            times["orm"].append((time.perf_counter() - started) * 1000)
    await engine.dispose()
    return times


async def fill(url: str, n: int) -> None:
    await reset(url)
    engine = create_engine(url)
    service = MarketDataService(create_session_factory(engine))
    for offset in range(0, n, 500_000):
        await service.ingest(ticks(min(500_000, n - offset), seed=offset), batch_size=50_000)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(sa.text("VACUUM ANALYZE market_data"))
    await engine.dispose()


async def latest_ms(url: str, repeat: int = 5) -> float:
    engine = create_engine(url)
    times = []
    async with create_session_factory(engine)() as session:
        repo = MarketDataRepository(session)
        for _ in range(repeat):
            started = time.perf_counter()
            found = await repo.latest(list(range(1, INSTRUMENTS + 1)))
            times.append((time.perf_counter() - started) * 1000)
            assert len(found) == INSTRUMENTS
    await engine.dispose()
    return statistics.median(times)


# The child reads its own peak from /proc (VmHWM): getrusage's ru_maxrss would include the
# parent's peak, which Linux carries across fork and exec.
PEAK_RSS_SCRIPT = """
import asyncio, sys
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.services.market_data import MarketDataService
from tickvault.settings import get_settings
from tickvault.services.readers import read_csv
async def main():
    engine = create_engine(sys.argv[1])
    report = await MarketDataService(create_session_factory(engine)).ingest(read_csv(sys.argv[2]))
    await engine.dispose()
    peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(report.accepted, int(peak.split()[1]) // 1024)
asyncio.run(main())
"""


def peak_rss_mb(url: str, rows: int, folder: Path) -> tuple[int, int]:
    path = folder / "ticks.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["symbol", "timestamp", "price", "bid", "ask", "volume"])
        for i in range(rows):
            writer.writerow(
                [
                    f"S{1 + i % INSTRUMENTS}",
                    (START + timedelta(microseconds=137 * i)).isoformat(),
                    100 + i % 1000 / 100,
                    "",
                    "",
                    i % 10_000,
                ]
            )
    asyncio.run(reset(url))
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, url, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    path.unlink()
    return int(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="raw/ingest rounds (median)")
    parser.add_argument("--orm", type=int, default=200_000, help="rows for the ORM path")
    parser.add_argument("--single", type=int, default=5_000)
    parser.add_argument("--latest-rows", type=int, default=5_000_000)
    parser.add_argument("--csv-rows", type=int, default=5_000_000)
    parser.add_argument("--only-bulk", action="store_true", help="the bulk comparison only")
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    rows = ticks(args.bulk)
    lines = []
    for engine_name in ["sqlite"] + (["postgresql"] if args.postgres_url else []):
        with (
            throwaway_database(engine_name, args.postgres_url) as url,
            tempfile.TemporaryDirectory() as folder,
        ):
            schema.upgrade(url)
            raws, ours = [], []
            for _ in range(args.repeat):  # alternating, so drift hits both sides alike
                asyncio.run(reset(url))
                raws.append(asyncio.run(raw_driver(url, rows)))
                asyncio.run(reset(url))
                ours.append(asyncio.run(tickvault_ingest(url, rows)))
            raw, mine = statistics.median(raws), statistics.median(ours)
            rounds = [round(o / r, 2) for o, r in zip(ours, raws, strict=True)]
            asyncio.run(reset(url))
            orm = asyncio.run(orm_add_all(url, rows[: args.orm]))
            print(
                f"{engine_name}: bulk raw {raw:,.0f}, ingest {mine:,.0f} rows/s (medians of "
                f"{args.repeat}; ratio per round {rounds}), "
                f"ORM {orm:,.0f} rows/s",
                flush=True,
            )
            if args.only_bulk:
                lines.append((engine_name, raw, mine, orm, None, None, None))
                continue
            asyncio.run(reset(url))
            times = asyncio.run(single_latency(url, args.single))
            p = {
                k: (statistics.quantiles(v, n=100)[49], statistics.quantiles(v, n=100)[98])
                for k, v in times.items()
            }
            print(
                f"{engine_name}: single p50/p99 service "
                f"{p['service'][0]:.3f}/{p['service'][1]:.3f} ms, "
                f"ORM {p['orm'][0]:.3f}/{p['orm'][1]:.3f} ms",
                flush=True,
            )
            asyncio.run(fill(url, args.latest_rows))
            latest = asyncio.run(latest_ms(url))
            print(
                f"{engine_name}: latest of {INSTRUMENTS} on {args.latest_rows:,} rows "
                f"{latest:.1f} ms",
                flush=True,
            )
            accepted, rss = peak_rss_mb(url, args.csv_rows, Path(folder))
            print(
                f"{engine_name}: CSV of {args.csv_rows:,} rows, {accepted:,} stored, "
                f"peak RSS {rss} MB",
                flush=True,
            )
            lines.append((engine_name, raw, mine, orm, p, latest, rss))
    print(
        "\nengine      ingest/raw  ingest/ORM  single p50 ratio  p99 ratio  latest ms  peak RSS MB"
    )
    for name, raw, mine, orm, p, latest, rss in lines:
        single = (
            f"{p['service'][0] / p['orm'][0]:>17.2f}{p['service'][1] / p['orm'][1]:>11.2f}"
            f"{latest:>11.1f}{rss:>13}"
            if p
            else ""
        )
        print(f"{name:<12}{mine / raw:>9.2f}x{mine / orm:>11.1f}x{single}")


if __name__ == "__main__":
    main()
