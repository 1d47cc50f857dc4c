"""Arrow out: ticks exported to Parquet, and the Arrow stream over HTTP, side by side.

Per engine, one throwaway database at head holding N ticks of one instrument (10 ms apart,
filled in SQL). Each turn reads the same N rows four ways, the order rotating from turn to
turn; medians of the turns:

- raw driver: sqlite3 / asyncpg reading the rows in pages of 65,536, converting nothing
  (the floor: what the database and driver cost alone);
- Parquet file: ``export_range``, what ``tickvault export`` runs, the count for its progress
  bar included (the range read on a connection of its own, ``NativeReads``: ADBC on
  PostgreSQL; on SQLite keyset pages read by ``adbc-driver-sqlite`` in a process of its
  own; prices rounded to 4 decimals, written as a Parquet file);
- Arrow over HTTP: ``GET /market-data/range`` with ``Accept:
  application/vnd.apache.arrow.stream`` from ``tickvault serve`` in a process of its own,
  read and decoded batch by batch by a client here;
- JSON over HTTP: the same endpoint as JSON, pages of 1,000, for the first ``--json-rows``
  rows only (it is far slower).

    python benchmarks/arrow_export.py --rows 5000000 --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import json
import resource
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow as pa
from sqlalchemy import make_url

from tickvault.bench import data
from tickvault.bench.load import serving
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.services import schema
from tickvault.services.export import ARROW_STREAM, export_range

START = datetime.fromtimestamp(data.START_EPOCH, UTC)
PAGE = 65_536
RAW_QUERY = (
    "SELECT id, instrument_id, timestamp, price, bid, ask, open_price, high_price, low_price, "
    "volume, deleted_at FROM market_data WHERE instrument_id = 1 AND timestamp >= {start} "
    "AND timestamp < {end} AND deleted_at IS NULL ORDER BY timestamp, id"
)


def _end(rows: int) -> datetime:
    return START + timedelta(seconds=rows / data.TICKS_PER_SECOND + 1)


def raw_sqlite(url: str, rows: int) -> int:
    path = make_url(url).database or ""
    with sqlite3.connect(path) as connection:
        end = _end(rows).replace(tzinfo=None).isoformat(" ", "microseconds")
        begin = START.replace(tzinfo=None).isoformat(" ", "microseconds")
        cursor = connection.execute(RAW_QUERY.format(start="?", end="?"), (begin, end))
        count = 0
        while page := cursor.fetchmany(PAGE):
            count += len(page)
    return count


async def raw_postgres(url: str, rows: int) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        count = 0
        async with connection.transaction():
            cursor = await connection.cursor(
                RAW_QUERY.format(start="$1", end="$2"), START, _end(rows)
            )
            while page := await cursor.fetch(PAGE):
                count += len(page)
        return count
    finally:
        await connection.close()


async def parquet_file(url: str, rows: int, folder: Path) -> int:
    engine = create_engine(url)
    try:
        path = folder / "export.parquet"
        totals: list[int] = []  # the count the CLI's progress bar shows, as it runs
        report = await export_range(
            create_session_factory(engine), "S01", START, _end(rows), path, on_total=totals.append
        )
        assert totals == [report.rows], (totals, report.rows)
        return report.rows
    finally:
        await engine.dispose()


def _range_url(port: int, rows: int, **params: str) -> str:
    query = {"instrument_id": "1", "start": START.isoformat(), "end": _end(rows).isoformat()}
    return f"http://127.0.0.1:{port}/market-data/range?" + urllib.parse.urlencode(
        {**query, **params}
    )


def arrow_http(port: int, rows: int) -> int:
    request = urllib.request.Request(_range_url(port, rows), headers={"Accept": ARROW_STREAM})
    count = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for batch in pa.ipc.open_stream(response):  # decoded as it arrives
            count += batch.num_rows
    return count


def json_http(port: int, rows: int, wanted: int) -> int:
    count, cursor = 0, None
    while count < wanted:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        with urllib.request.urlopen(_range_url(port, rows, **params), timeout=600) as response:
            page = json.loads(response.read())
        count += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return count


def _timed(work: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = work()
    return count, time.perf_counter() - started


def measure(engine: str, url: str, rows: int, repeat: int, json_rows: int) -> dict[str, float]:
    """Median rows/s of each way of reading, turns alternating."""
    ways: dict[str, Callable[[int, Path], int]] = {
        "raw driver": lambda port, folder: (
            raw_sqlite(url, rows) if engine == "sqlite" else asyncio.run(raw_postgres(url, rows))
        ),
        "Parquet file": lambda port, folder: asyncio.run(parquet_file(url, rows, folder)),
        "Arrow over HTTP": lambda port, folder: arrow_http(port, rows),
        "JSON over HTTP": lambda port, folder: json_http(port, rows, json_rows),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    with serving(url) as port, tempfile.TemporaryDirectory() as tmp:
        for turn in range(repeat):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                count, seconds = _timed(lambda w=ways[name]: w(port, Path(tmp)))  # type: ignore[misc]
                expected = min(rows, json_rows) if name == "JSON over HTTP" else rows
                assert count == expected, (name, count, expected)
                rates[name].append(count / seconds)
                print(f"  turn {turn + 1} {name}: {count / seconds:,.0f} rows/s", flush=True)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="turns (medians kept)")
    parser.add_argument("--json-rows", type=int, default=100_000)
    parser.add_argument("--postgres-url", help="server to create throwaway databases on")
    args = parser.parse_args()
    for engine in ["sqlite"] + (["postgresql"] if args.postgres_url else []):
        with data.throwaway(engine, args.postgres_url) as url:
            print(f"{engine}: filling {args.rows:,} ticks of one instrument", flush=True)
            schema.upgrade(url, "head")
            asyncio.run(data.fill_one_instrument(url, args.rows))
            rates = measure(engine, url, args.rows, args.repeat, args.json_rows)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n{engine}, {args.rows:,} ticks of one instrument, medians of {args.repeat}")
        print(f"{'way':<18}{'rows/s':>14}")
        for name, rate in rates.items():
            print(f"{name:<18}{rate:>14,.0f}")
        ratios = {
            "Parquet file / raw driver": rates["Parquet file"] / rates["raw driver"],
            "Arrow over HTTP / Parquet file": rates["Arrow over HTTP"] / rates["Parquet file"],
            "Arrow over HTTP / JSON over HTTP": rates["Arrow over HTTP"] / rates["JSON over HTTP"],
        }
        for name, ratio in ratios.items():
            print(f"{name:<34}{ratio:>6.2f}")
        print(f"peak RSS of this process (fill, raw reads, Parquet exports): {peak:,.0f} MB\n")


if __name__ == "__main__":
    main()
