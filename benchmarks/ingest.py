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

``--files N`` measures file loads instead (the columnar path): a CSV and a Parquet file of N
rows, and per round, in turn, the raw driver writing the same rows (read from the Parquet
file a batch of 10,000 at a time, the reading not timed), ``ingest`` of each file as
``tickvault ingest`` runs it (``open_ticks``, the file's sha256 receipt, validation, the
monitor attached), each in a process of its own that reports its peak RSS; on SQLite also
the raw driver running the multi-row INSERTs tickvault's columnar path runs instead of
executemany (what the statement's shape alone gains):

    python benchmarks/ingest.py --files 5000000 --repeat 1 \
        --postgres-url postgresql://postgres@127.0.0.1/test
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
from itertools import chain
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from _common import throwaway_database
from sqlalchemy.engine import make_url

from tickvault.database.bulk import (
    TICK_COLUMNS,
    sqlite_insert,
    sqlite_rows_per_insert,
    sqlite_timestamp,
)
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
        # PostgreSQL: TRUNCATE, not DELETE, whose dead rows each round would leave the next
        # to step over (the rates then drift down round by round).
        empty = "DELETE FROM" if engine.dialect.name == "sqlite" else "TRUNCATE"
        await connection.execute(sa.text(f"{empty} market_data"))
        if not (await connection.execute(sa.text("SELECT count(*) FROM instruments"))).scalar():
            await connection.execute(
                sa.text(
                    "INSERT INTO instruments (id, symbol, name) VALUES "
                    + ", ".join(f"({i}, 'S{i}', 'S{i}')" for i in range(1, INSTRUMENTS + 1))
                )
            )
    await engine.dispose()


def raw_sqlite(path: str) -> tuple[sqlite3.Connection, str]:
    """A plain sqlite3 connection configured as tickvault configures its own
    (database/engine.py: foreign keys enforced, WAL, synchronous=NORMAL, the same page
    cache), and the INSERT of a tick: same database, same work."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA cache_size=-{get_settings().sqlite_cache_size_mb * 1024}")
    marks = ", ".join("?" * len(TICK_COLUMNS))
    return connection, f"INSERT INTO market_data ({', '.join(TICK_COLUMNS)}) VALUES ({marks})"


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
    connection, sql = raw_sqlite(str(parsed.database))
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


FILE_INGEST_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.receipts import file_fingerprint
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService
from tickvault.services.readers import open_ticks
async def main():
    engine = create_engine(sys.argv[1])
    monitor = DatabasePerformanceMonitor(engine)
    path = Path(sys.argv[2])
    started = time.perf_counter()
    key = file_fingerprint(path)
    report = await MarketDataService(create_session_factory(engine)).ingest(
        open_ticks(path), source_key=key, fingerprint=key, source_name=str(path))
    elapsed = time.perf_counter() - started
    # Every row the load inserted, the receipt's one row aside (by_table is windowed).
    inserted = (await monitor.collect_metrics()).total_rows_inserted - 1
    await engine.dispose()
    peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(report.accepted, report.rejected, inserted, elapsed, int(peak.split()[1]) // 1024)
asyncio.run(main())
"""


def write_files(rows: int, folder: Path) -> tuple[Path, Path]:
    """A CSV and a Parquet file of the same ``rows`` ticks (ISO 8601 text with Z in CSV)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    csv_path, parquet_path = folder / "ticks.csv", folder / "ticks.parquet"
    writer = None
    with csv_path.open("wb") as out:
        for offset in range(0, rows, 500_000):
            n = min(500_000, rows - offset)
            index = pa.array(range(offset, offset + n), pa.int64())
            price = pc.add(pc.divide(pc.cast(pc.bit_wise_and(pc.multiply(index, 7919), 65535),
                                             pa.float64()), 64.0), 10.0)  # fmt: skip
            stamps = pc.cast(pc.add(pc.multiply(index, 137), int(START.timestamp() * 1e6)),
                             pa.timestamp("us", tz="UTC"))  # fmt: skip
            table = pa.table(
                {
                    "instrument_id": pc.add(pc.bit_wise_and(index, 31), 1),
                    "timestamp": stamps,
                    "price": price,
                    "bid": pc.subtract(price, 0.01),
                    "ask": pc.add(price, 0.01),
                    "volume": pc.bit_wise_and(index, 8191),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(parquet_path, table.schema)
            writer.write_table(table, row_group_size=100_000)
            text = table.set_column(
                1, "timestamp", pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")
            )
            pcsv.write_csv(
                text, out, pcsv.WriteOptions(include_header=offset == 0, quoting_style="none")
            )
    assert writer is not None
    writer.close()
    return csv_path, parquet_path


async def raw_file_rows(
    url: str, parquet_path: Path, multi_row: bool = False
) -> tuple[float, float]:
    """The raw driver writing the file's rows, batches of 10,000, one transaction each:
    (rows/s of the driver calls alone, rows/s with the rows' conversion for the driver,
    as tickvault's own raw baseline above times it). The file's reading is not timed.
    ``multi_row`` (SQLite): the statements tickvault's columnar path runs instead of
    executemany, multi-row INSERTs of ``sqlite_rows_per_insert()`` rows."""
    import pyarrow.parquet as pq

    parsed = make_url(url)
    postgres = parsed.get_backend_name() == "postgresql"
    if postgres:
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        pg = await asyncpg.connect(dsn)
    else:
        lite, sql = raw_sqlite(str(parsed.database))
    driver = converting = 0.0
    rows = 0
    for batch in pq.ParquetFile(parquet_path).iter_batches(batch_size=10_000):
        data = batch.to_pydict()
        n = batch.num_rows
        nulls = [None] * n
        columns = [data.get(name, nulls) for name in TICK_COLUMNS]
        started = time.perf_counter()
        if postgres:
            records = list(zip(*columns, strict=True))
            converted = time.perf_counter()
            await pg.copy_records_to_table("market_data", records=records, columns=TICK_COLUMNS)
        else:
            columns[1] = [sqlite_timestamp(value) for value in columns[1]]
            records = list(zip(*columns, strict=True))
            if multi_row:
                step = sqlite_rows_per_insert()
                chunks = [records[i : i + step] for i in range(0, n, step)]
                flat = [tuple(chain.from_iterable(chunk)) for chunk in chunks]
            converted = time.perf_counter()
            lite.execute("BEGIN")
            if multi_row:
                for chunk, values in zip(chunks, flat, strict=True):
                    lite.execute(sqlite_insert(len(chunk)), values)
            else:
                lite.executemany(sql, records)
            lite.execute("COMMIT")
        done = time.perf_counter()
        driver += done - converted
        converting += converted - started
        rows += n
    if postgres:
        await pg.close()
    else:
        lite.close()
    return rows / driver, rows / (driver + converting)


async def clear_loads(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(sa.text("TRUNCATE market_data, write_receipts"))
        else:
            await connection.execute(sa.text("DELETE FROM market_data"))
            await connection.execute(sa.text("DELETE FROM write_receipts"))
    await engine.dispose()
    if engine.dialect.name == "sqlite":
        lite = sqlite3.connect(str(make_url(url).database))
        lite.execute("VACUUM")
        lite.close()


def file_ingest(url: str, path: Path) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", FILE_INGEST_SCRIPT, url, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    accepted, rejected, inserted, elapsed, rss = out
    assert int(accepted) == int(inserted), out  # the monitor saw every row
    assert int(rejected) == 0, out
    return int(accepted) / float(elapsed), int(rss)


def files_benchmark(rows: int, repeat: int, postgres_url: str | None) -> None:
    summary = []
    with tempfile.TemporaryDirectory() as folder:
        csv_path, parquet_path = write_files(rows, Path(folder))
        print(
            f"files: {rows:,} rows, CSV {csv_path.stat().st_size / 1e6:,.0f} MB, "
            f"Parquet {parquet_path.stat().st_size / 1e6:,.0f} MB",
            flush=True,
        )
        for engine_name in ["sqlite"] + (["postgresql"] if postgres_url else []):
            with throwaway_database(engine_name, postgres_url) as url:
                schema.upgrade(url)
                asyncio.run(reset(url))
                figures: dict[str, list[float]] = {}
                peaks: dict[str, int] = {}
                sides = ["raw", "csv", "parquet"] + (["multi"] if engine_name == "sqlite" else [])
                for _ in range(repeat):  # in turn, so that drift hits every side alike
                    for side in sides:
                        asyncio.run(clear_loads(url))
                        if side == "multi":
                            driver, _ = asyncio.run(raw_file_rows(url, parquet_path, True))
                            figures.setdefault("multi", []).append(driver)
                            print(f"{engine_name} raw, multi-row INSERTs: {driver:,.0f} rows/s",
                                  flush=True)  # fmt: skip
                            continue
                        if side == "raw":
                            driver, with_conversion = asyncio.run(raw_file_rows(url, parquet_path))
                            figures.setdefault("raw", []).append(driver)
                            figures.setdefault("raw+convert", []).append(with_conversion)
                            print(f"{engine_name} raw: {driver:,.0f} rows/s "
                                  f"({with_conversion:,.0f} converting)", flush=True)  # fmt: skip
                            continue
                        rate, rss = file_ingest(url, csv_path if side == "csv" else parquet_path)
                        figures.setdefault(side, []).append(rate)
                        peaks[side] = max(peaks.get(side, 0), rss)
                        print(f"{engine_name} ingest {side}: {rate:,.0f} rows/s, "
                              f"peak RSS {rss} MB", flush=True)  # fmt: skip
                medians = {side: statistics.median(v) for side, v in figures.items()}
                summary.append((engine_name, medians, peaks))
    print(f"\nfile loads of {rows:,} rows, medians of {repeat} round(s), rows/s")
    print("engine      raw driver  (+convert)  ingest CSV  ingest Parquet  CSV/raw  Parquet/raw"
          "  CSV/(raw+convert)  Parquet/(raw+convert)  peak RSS MB CSV/Parquet")  # fmt: skip
    for name, m, peaks in summary:
        print(
            f"{name:<12}{m['raw']:>10,.0f}{m['raw+convert']:>12,.0f}{m['csv']:>12,.0f}"
            f"{m['parquet']:>16,.0f}{m['csv'] / m['raw']:>8.2f}x{m['parquet'] / m['raw']:>11.2f}x"
            f"{m['csv'] / m['raw+convert']:>18.2f}x{m['parquet'] / m['raw+convert']:>22.2f}x"
            f"{peaks['csv']:>13}/{peaks['parquet']}"
        )
        if "multi" in m:
            print(
                f"{name:<12}raw driver with multi-row INSERTs (tickvault's statements): "
                f"{m['multi']:,.0f} rows/s; CSV {m['csv'] / m['multi']:.2f}x, "
                f"Parquet {m['parquet'] / m['multi']:.2f}x of it"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="raw/ingest rounds (median)")
    parser.add_argument("--orm", type=int, default=200_000, help="rows for the ORM path")
    parser.add_argument("--single", type=int, default=5_000)
    parser.add_argument("--latest-rows", type=int, default=5_000_000)
    parser.add_argument("--csv-rows", type=int, default=5_000_000)
    parser.add_argument("--only-bulk", action="store_true", help="the bulk comparison only")
    parser.add_argument("--files", type=int, help="measure file loads of this many rows only")
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    if args.files:
        files_benchmark(args.files, args.repeat, args.postgres_url)
        return
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
