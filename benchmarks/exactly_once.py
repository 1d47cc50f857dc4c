"""What exactly-once writes cost, side by side in one run, on SQLite and PostgreSQL.

1. bulk: ``MarketDataService.ingest`` of the same rows without and with a ``source_key``
   (each batch then moves the load's receipt in its own transaction), alternating (which
   goes first alternates too), medians of ``--repeat`` rounds (goal: keyed >= 0.98x); the
   share of the keyed load's time its ``write_receipts`` statements took, as the monitor
   times them (the receipt's own cost, which the rates' noise between rounds can hide);
   and the time ``tickvault ingest`` spends on the file's sha256 for the same rows as CSV;
2. http: ``wrk`` posting one tick per request to ``tickvault serve``, without and with a
   unique ``Idempotency-Key`` per request, alternating, medians (goal: keyed >= 0.90x).
   Skipped when wrk is not installed (Debian: ``apt-get install wrk``).

    python benchmarks/exactly_once.py --rows 1000000 --repeat 3 --seconds 10 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import csv
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import throwaway_database
from ingest import INSTRUMENTS, reset, ticks

from tickvault.bench.live import WRK_SCRIPT, _wrk
from tickvault.bench.load import LOAD_START, count_ticks, serving
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.receipts import file_fingerprint
from tickvault.services import schema
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService

KEYED_WRK = WRK_SCRIPT.replace(
    'return wrk.format(nil, "/market-data", nil, body)',
    'return wrk.format(nil, "/market-data", {["Content-Type"] = "application/json", '
    '["Idempotency-Key"] = string.format("k-%d", n)}, body)',
)


async def ingest_rate(url: str, rows: list[dict[str, Any]], key: str | None) -> tuple[float, float]:
    """(rows/s, the share of the load's time its write_receipts statements took, as the
    monitor timed them: opening the receipt, moving it with each batch, finishing it)."""
    await reset(url)
    engine = create_engine(url)
    monitor = DatabasePerformanceMonitor(engine)
    service = MarketDataService(create_session_factory(engine))
    started = time.perf_counter()
    report = await service.ingest(rows, batch_size=10_000, source_key=key)
    elapsed = time.perf_counter() - started
    assert report.accepted == len(rows), report
    receipts_ms = sum(
        histogram.total_ms
        for (table, _), (histogram, _, _) in monitor.series().items()
        if table == "write_receipts"
    )
    assert (receipts_ms > 0) == (key is not None), receipts_ms
    monitor.uninstrument()
    await engine.dispose()
    return len(rows) / elapsed, receipts_ms / 1000 / elapsed


def fingerprint_ms(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(ms to hash, MB) for the rows as a CSV file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ticks.csv"
        with path.open("w", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=list(rows[0]))
            out.writeheader()
            out.writerows(rows)
        file_fingerprint(path)  # read once: the page cache holds it, as after a download
        started = time.perf_counter()
        file_fingerprint(path)
        return (time.perf_counter() - started) * 1000, path.stat().st_size / 1e6


def bulk(url: str, rows: int, repeat: int) -> dict[str, Any]:
    data = ticks(rows)
    plain: list[float] = []
    keyed: list[float] = []
    shares: list[float] = []
    for round_ in range(repeat):
        # Which goes first alternates: a table just emptied, autovacuum, the page cache
        # favour neither side.
        runs = [(plain, None), (keyed, f"bench-{round_}")]
        for results, key in runs if round_ % 2 == 0 else runs[::-1]:
            rate, share = asyncio.run(ingest_rate(url, data, key))
            results.append(rate)
            if key is not None:
                shares.append(share)
    hash_ms, megabytes = fingerprint_ms(data)
    return {
        "rows": rows,
        "plain_rows_per_second": round(statistics.median(plain)),
        "keyed_rows_per_second": round(statistics.median(keyed)),
        "ratio": round(statistics.median(keyed) / statistics.median(plain), 3),
        "rounds": {"plain": [round(r) for r in plain], "keyed": [round(r) for r in keyed]},
        # What the rates' noise between rounds hides: the receipt's own statements.
        "receipt_statements_share_of_keyed_load": round(statistics.median(shares), 4),
        "csv_megabytes": round(megabytes, 1),
        "sha256_ms": round(hash_ms, 1),
        "sha256_share_of_plain_load": round(hash_ms / 1000 / (rows / statistics.median(plain)), 4),
    }


def http(url: str, seconds: float, connections: int, repeat: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
    asyncio.run(reset(url))
    scripts = {}
    for name in ("plain", "keyed"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            scripts[name] = script.name
    rates: dict[str, list[float]] = {"plain": [], "keyed": []}
    errors = 0
    try:
        with serving(url) as port:
            for round_ in range(repeat):
                pair = [("plain", WRK_SCRIPT), ("keyed", KEYED_WRK)]
                for name, source in pair if round_ % 2 == 0 else pair[::-1]:
                    # Each round its own timestamps (and keys): nothing repeats.
                    offset = (2 * round_ + (name == "keyed") + 1) * 10**9
                    Path(scripts[name]).write_text(
                        source.replace("INSTRUMENTS", str(INSTRUMENTS))
                        .replace("BASE", str(offset))
                        .replace("EPOCH", str(int(LOAD_START.timestamp())))
                    )
                    _wrk(wrk, scripts[name], port, 1, connections)  # warm-up
                    result = _wrk(wrk, scripts[name], port, seconds, connections)
                    rates[name].append(result["requests_per_second"])
                    errors += result["errors"]
            time.sleep(0.5)
            stored = asyncio.run(count_ticks(url))
    finally:
        for path in scripts.values():
            os.unlink(path)
    return {
        "connections": connections,
        "plain_requests_per_second": round(statistics.median(rates["plain"])),
        "keyed_requests_per_second": round(statistics.median(rates["keyed"])),
        "ratio": round(statistics.median(rates["keyed"]) / statistics.median(rates["plain"]), 3),
        "rounds": {name: [round(r) for r in values] for name, values in rates.items()},
        "errors": errors,
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    engines = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    for engine in engines:
        with throwaway_database(engine, args.postgres_url) as url:
            schema.upgrade(url, "head")
            print(f"{engine} bulk ingest, receipts off vs on:", flush=True)
            result = bulk(url, args.rows, args.repeat)
            for name, value in result.items():
                print(f"  {name}: {value}", flush=True)
            print(f"{engine} POST /market-data one tick per request, no key vs key:", flush=True)
            for name, value in http(url, args.seconds, args.connections, args.repeat).items():
                print(f"  {name}: {value}", flush=True)


if __name__ == "__main__":
    main()
