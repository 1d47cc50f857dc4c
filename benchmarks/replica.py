"""Reads on a streaming replica: ``GET /market-data/ohlcv`` with the feed running, served
from the primary alone and with ``TICKVAULT_READ_REPLICA_URL``, on PostgreSQL.

A throwaway primary cluster and a standby made from it by ``pg_basebackup -R``
(``streaming_pair`` of ``tests/e2e/test_read_replica.py``), both on this machine; ``--rows`` ticks
of 50 instruments in the primary. Per turn, alternating, ``tickvault serve --simulate`` on the
primary without and with the replica's URL, and ``wrk -t2 -c16`` asking for one instrument's
1-minute bars over two hours for ``--seconds``: requests/s, p50 and p99, and the ticks the
feed stored meanwhile. Run from the repository's root (it imports the test suite's clusters):

    python benchmarks/replica.py --rows 1000000 --turns 2 --seconds 10 --rate 1000
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_outage import Cluster
from tests.e2e.test_read_replica import streaming_pair

from tickvault.bench.data import prepare
from tickvault.bench.live import _wrk
from tickvault.bench.load import count_ticks, free_port, wait_for_port
from tickvault.database.admin import create_database

BARS = (
    "/market-data/ohlcv?instrument_id=7&interval=1m"
    "&start=2024-01-02T00:00:00Z&end=2024-01-02T02:00:00Z"
)
SCRIPT = f'request = function() return wrk.format("GET", "{BARS}") end\n'


def replayed(primary: str, replica: str) -> bool:
    async def check() -> bool:
        writer, reader = await asyncpg.connect(primary), await asyncpg.connect(replica)
        try:
            lsn = await writer.fetchval("SELECT pg_current_wal_lsn()")
            done = await reader.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", lsn)
            return bool(done)
        finally:
            await writer.close()
            await reader.close()

    return asyncio.run(check())


def turn(url: str, replica: str | None, seconds: float, rate: float, script: str) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TICKVAULT_API_KEY",)}
    env.pop("TICKVAULT_READ_REPLICA_URL", None)
    if replica is not None:
        env["TICKVAULT_READ_REPLICA_URL"] = replica
    command = [sys.executable, "-c", "from tickvault.cli import main; main()", "serve",
               "--simulate", "--rate", str(rate), "--port", str(port),
               "--database-url", url]  # fmt: skip
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(command, stdout=log, stderr=log, env=env) as server,
    ):
        try:
            wait_for_port(port, server, log)
            wrk = shutil.which("wrk")
            assert wrk is not None, "wrk is not installed (Debian: apt-get install wrk)"
            _wrk(wrk, script, port, 2, 16)  # warm-up, not counted
            before = asyncio.run(count_ticks(url))
            figures = _wrk(wrk, script, port, seconds, 16)
            figures["feed_ticks"] = asyncio.run(count_ticks(url)) - before
        finally:
            server.terminate()
            server.wait(timeout=30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="the feed's ticks a second")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SCRIPT)
    try:
        with streaming_pair() as (primary, standby):
            run(primary, standby, args, script.name)
    finally:
        os.unlink(script.name)


def run(primary: Cluster, standby: Cluster, args: argparse.Namespace, script: str) -> None:
    url = asyncio.run(create_database(primary.url, "bench"))
    prepare(url, "head", args.rows)
    replica = url.replace(f":{primary.port}/", f":{standby.port}/")
    plain_dsn = f"postgresql://postgres@127.0.0.1:{primary.port}/bench"
    replica_dsn = f"postgresql://postgres@127.0.0.1:{standby.port}/bench"
    while not replayed(plain_dsn, replica_dsn):
        time.sleep(0.5)
    results: dict[str, list[dict]] = {"primary alone": [], "primary + replica": []}
    for n in range(args.turns):
        order = [("primary alone", None), ("primary + replica", replica)]
        for name, replica_url in order if n % 2 == 0 else order[::-1]:
            figures = turn(url, replica_url, args.seconds, args.rate, script)
            results[name].append(figures)
            print(name, figures, flush=True)
    print(f"\n{args.rows:,} ticks; wrk -t2 -c16, {args.seconds:g} s a turn; feed {args.rate:g}/s")
    print(f"{'':20} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8} {'feed ticks':>11}")
    for name, runs in results.items():
        rates = [r["requests_per_second"] for r in runs]
        print(
            f"{name:20} {statistics.median(rates):15,.0f} "
            f"{statistics.median(r['p50_ms'] for r in runs):8.2f} "
            f"{statistics.median(r['p99_ms'] for r in runs):8.2f} "
            f"{statistics.median(r['feed_ticks'] for r in runs):11,.0f}"
            f"   turns {', '.join(f'{x:,.0f}' for x in rates)}"
        )
    alone = statistics.median(r["requests_per_second"] for r in results["primary alone"])
    both = statistics.median(r["requests_per_second"] for r in results["primary + replica"])
    print(f"primary + replica / primary alone: {both / alone:.2f}x")


if __name__ == "__main__":
    main()
