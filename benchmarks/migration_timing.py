"""How long each revision takes on a large table, on SQLite and PostgreSQL.

Fills a throwaway database at the baseline with N market_data rows (and N/10 alert_logs),
then times every upgrade step to head and every downgrade step back. On PostgreSQL each
step holds its table locks for about the time shown (see docs/migrations.md); then, from
f79e2702f75c again, ``tickvault db build-indexes`` (CONCURRENTLY, writers go on) and the
upgrade to a7c3e9d15b42 that follows it.

    python benchmarks/migration_timing.py --rows 1000000 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from tickvault.services import schema

CHAIN = ["4524473b46fb", "df856072bded", "4a24cf1de90a", "f79e2702f75c", "a7c3e9d15b42"]
START = datetime(2024, 1, 2, tzinfo=UTC)


def _rows(n: int, instruments: int) -> list[tuple[int, datetime, Decimal, Decimal, Decimal, int]]:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        price = Decimal(rng.randint(1_0000, 1000_0000)) / 10_000
        rows.append(
            (
                1 + i % instruments,
                START + timedelta(milliseconds=i),
                price,
                price - Decimal("0.01"),
                price + Decimal("0.01"),
                rng.randint(1, 10_000),
            )
        )
    return rows


async def _fill_postgres(dsn: str, n: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.executemany(
            "INSERT INTO instruments (id, symbol, name) VALUES ($1, $2, $3)",
            [(i, f"S{i}", f"S{i}") for i in range(1, 51)],
        )
        await connection.executemany(
            "INSERT INTO alert_rules (id, name, instrument_id, condition, threshold) "
            "VALUES ($1, $2, $1, 'price_above', 100)",
            [(i, f"r{i}") for i in range(1, 51)],
        )
        await connection.copy_records_to_table(
            "market_data",
            records=_rows(n, 50),
            columns=["instrument_id", "timestamp", "price", "bid", "ask", "volume"],
        )
        await connection.copy_records_to_table(
            "alert_logs",
            records=[
                (
                    1 + i % 50,
                    1 + i % 50,
                    START + timedelta(seconds=i),
                    Decimal("101.5"),
                    Decimal("100"),
                    "fired",
                    0.2,
                )
                for i in range(n // 10)
            ],
            columns=[
                "rule_id",
                "instrument_id",
                "timestamp",
                "trigger_value",
                "threshold_value",
                "fired_status",
                "evaluation_time_ms",
            ],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def _fill_sqlite(path: Path, n: int) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO instruments (id, symbol, name) VALUES (?, ?, ?)",
            [(i, f"S{i}", f"S{i}") for i in range(1, 51)],
        )
        connection.executemany(
            "INSERT INTO alert_rules (id, name, instrument_id, condition, threshold) "
            "VALUES (?, ?, ?, 'price_above', 100)",
            [(i, f"r{i}", i) for i in range(1, 51)],
        )
        connection.executemany(
            "INSERT INTO market_data (instrument_id, timestamp, price, bid, ask, volume) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i, ts.strftime("%Y-%m-%d %H:%M:%S.%f"), float(p), float(b), float(a), v)
                for i, ts, p, b, a, v in _rows(n, 50)
            ],
        )
        connection.executemany(
            "INSERT INTO alert_logs (rule_id, instrument_id, timestamp, trigger_value, "
            "threshold_value, fired_status, evaluation_time_ms) VALUES (?, ?, ?, 101.5, 100, "
            "'fired', 0.2)",
            [
                (
                    1 + i % 50,
                    1 + i % 50,
                    (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f"),
                )
                for i in range(n // 10)
            ],
        )
    connection.close()


def _time_chain(url: str) -> list[tuple[str, float]]:
    timings = []
    for step in CHAIN[1:]:
        started = time.perf_counter()
        schema.upgrade(url, step)
        timings.append((f"upgrade to {step}", time.perf_counter() - started))
    for step in reversed(CHAIN[:-1]):
        started = time.perf_counter()
        # The migration alone: without the check that asks before dropping rows (which
        # rehearses the downgrade on an empty in-memory database and counts what it drops).
        schema.downgrade(url, step, allow_data_loss=True)
        timings.append((f"downgrade to {step}", time.perf_counter() - started))
    return timings


def _time_online(url: str) -> list[tuple[str, float]]:
    schema.upgrade(url, "f79e2702f75c")
    started = time.perf_counter()
    schema.build_indexes_concurrently(url)
    built = time.perf_counter() - started
    started = time.perf_counter()
    schema.upgrade(url, "a7c3e9d15b42")
    return [
        ("build-indexes (concurrent)", built),
        ("then upgrade to a7c3e9d15b42", time.perf_counter() - started),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", help="server to create a throwaway database on")
    args = parser.parse_args()

    results: dict[str, list[tuple[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timing.db"
        url = f"sqlite:///{path}"
        schema.upgrade(url, CHAIN[0])
        print(f"sqlite: filling {args.rows:,} rows ...", flush=True)
        _fill_sqlite(path, args.rows)
        results["sqlite"] = _time_chain(url)

    if args.postgres_url:
        admin = make_url(args.postgres_url).set(drivername="postgresql")
        name = f"tickvault_timing_{uuid.uuid4().hex[:8]}"
        dsn = admin.render_as_string(hide_password=False)

        async def admin_sql(sql: str) -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(sql)
            finally:
                await connection.close()

        asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.set(database=name).render_as_string(hide_password=False)
            schema.upgrade(url, CHAIN[0])
            print(f"postgresql: filling {args.rows:,} rows ...", flush=True)
            asyncio.run(_fill_postgres(url, args.rows))
            results["postgresql"] = _time_chain(url)
            online = _time_online(url)
        finally:
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    print(f"\n{args.rows:,} market_data rows, {args.rows // 10:,} alert_logs rows")
    engines = list(results)
    print(f"{'step':<28}" + "".join(f"{e:>14}" for e in engines))
    for i, (step, _) in enumerate(results[engines[0]]):
        print(f"{step:<28}" + "".join(f"{results[e][i][1]:>13.1f}s" for e in engines))
    if args.postgres_url:
        print("\nPostgreSQL, from f79e2702f75c:")
        for step, seconds in online:
            print(f"{step:<28}{seconds:>13.1f}s")


if __name__ == "__main__":
    main()
