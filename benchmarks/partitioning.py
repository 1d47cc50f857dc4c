"""A partitioned market_data against a plain one, side by side on PostgreSQL.

Two throwaway databases filled alike: N ticks of 50 instruments (one alert rule each) over 90 UTC
days ending today. One is converted with ``tickvault db partition --interval 1d`` (timed:
rows copied a second); both are vacuumed and the server checkpointed. Then, the two taking
turns:

- reads (medians of ``--reads`` runs after a warm-up): the latest tick of every
  instrument, one instrument's last hour, its 1-minute bars over one day; and how many
  partitions each plan reads (EXPLAIN ANALYZE, partitions actually scanned);
- bulk ingest: ``--copy-rows`` ticks of today through ``write_ticks`` (COPY), 6 turns
  each, alternating, medians;
- live ingest: ``--writers`` producers each awaiting ``insert_market_data`` (alert rules
  on, one per instrument), ``--live-seconds`` per turn, two turns each, ticks of today;
- retention, 30 days out of 90: on the plain table today's purge (the oldest 30 days
  soft-deleted first, untimed, then ``purge_soft_deleted`` row by row in batches of
  10,000), on the partitioned one the same purge dropping 30 partitions. Time and WAL
  written (``pg_current_wal_lsn``: server-wide, so other work on the server counts too),
  and the latency of the same live producers writing while it runs (p50, p99, max); their
  ticks' WAL is taken out at the bytes a tick wrote in the live turns.

    python benchmarks/partitioning.py --rows 3000000 --writers 16 --live-seconds 5 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import throwaway_database
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.bench.cases import percentiles
from tickvault.database.bulk import write_ticks
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.types import utcnow
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.services import partitioning, schema
from tickvault.services.alerts import AlertService
from tickvault.services.market_data import MarketDataService
from tickvault.services.purge import purge_soft_deleted

DAYS, DROPPED_DAYS, INSTRUMENTS = 90, 30, 50
COPY_TURNS = 6
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=DAYS - 1)


async def fill(engine: AsyncEngine, rows: int) -> None:
    step = (DAYS * 86_400) / rows
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO instruments (id, symbol, name) "
                "SELECT g, 'S' || g, 'S' || g FROM generate_series(1, :n) g"
            ),
            {"n": INSTRUMENTS},
        )
        await connection.execute(  # one rule each, never firing: evaluated on every tick
            text(
                "INSERT INTO alert_rules (name, instrument_id, condition, threshold) "
                "SELECT 'above ' || g, g, 'price_above', 1000000 FROM generate_series(1, :n) g"
            ),
            {"n": INSTRUMENTS},
        )
        await connection.execute(
            text(
                "INSERT INTO market_data (instrument_id, timestamp, price, volume) "
                "SELECT 1 + g % :i, CAST(:start AS timestamptz) "
                "+ make_interval(secs => g * CAST(:step AS float8)), "
                "100 + (g % 997) / 10.0, 1 + g % 500 FROM generate_series(0, :n - 1) g"
            ),
            {"i": INSTRUMENTS, "start": START, "step": step, "n": rows},
        )
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE market_data"))


class Producers:
    """``writers`` producers, each awaiting ``insert_market_data`` for every tick of today,
    with the instruments' alert rules evaluated; latencies in ms."""

    def __init__(self, engine: AsyncEngine, writers: int, first: int) -> None:
        sessions = create_session_factory(engine)
        self.service = MarketDataService(sessions, alerts=AlertService(sessions))
        self.writers, self.next, self.latencies = writers, first, list[float]()
        self.stop = asyncio.Event()

    async def _produce(self) -> None:
        while not self.stop.is_set():
            n, self.next = self.next, self.next + 1
            tick = {
                "instrument_id": 1 + n % INSTRUMENTS,
                "timestamp": TODAY + timedelta(hours=12, microseconds=n),
                "price": 100 + n % 997 / 10,
                "volume": 1 + n % 500,
            }
            started = time.perf_counter()
            await self.service.insert_market_data(tick)
            self.latencies.append((time.perf_counter() - started) * 1000)

    async def during(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Produce while ``work`` runs (after a second not counted: the rules' state is
        learnt, the connections opened); ``work``'s result."""
        tasks = [asyncio.create_task(self._produce()) for _ in range(self.writers)]
        try:
            await asyncio.sleep(1)
            self.latencies.clear()
            return await work()
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)
            await self.service.aclose()


async def timed(work: Callable[[], Awaitable[Any]], runs: int) -> float:
    await work()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def reads(engine: AsyncEngine) -> dict[str, Callable[[], Awaitable[Any]]]:
    sessions = create_session_factory(engine)
    hour = TODAY + timedelta(hours=12)

    async def latest() -> None:
        async with sessions() as session:
            assert len(await MarketDataRepository(session).latest()) == INSTRUMENTS

    async def one_hour() -> None:
        async with sessions() as session:
            await MarketDataRepository(session).range(7, hour, hour + timedelta(hours=1))

    async def bars() -> None:
        async with sessions() as session:
            await MarketDataRepository(session).ohlcv(
                7, "1m", TODAY - timedelta(days=10), TODAY - timedelta(days=9)
            )

    return {"latest, 50 instruments": latest, "range, 1 hour": one_hour, "ohlcv 1m, 1 day": bars}


PLANS = {
    "latest, 50 instruments": None,  # the repository's own query, captured below
    "range, 1 hour": (
        "SELECT * FROM market_data WHERE instrument_id = 7 AND timestamp >= :a "
        "AND timestamp < :b ORDER BY timestamp, id LIMIT 1001"
    ),
}


async def partitions_read(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> int:
    """Partitions an EXPLAIN ANALYZE shows scanned at least once."""
    async with engine.connect() as connection:
        plan = (
            await connection.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), params)
        ).scalar_one()
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name", "").startswith("market_data") and node.get("Actual Loops"):
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return len(found)


async def wal_bytes(engine: AsyncEngine, work: Callable[[], Awaitable[Any]]) -> tuple[float, int]:
    async with engine.connect() as connection:
        before = (await connection.execute(text("SELECT pg_current_wal_lsn()"))).scalar_one()
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    async with engine.connect() as connection:
        written = await connection.scalar(
            text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:b AS pg_lsn))"), {"b": before}
        )
    return elapsed, int(written or 0)


async def run(
    plain_url: str,
    parted_url: str,
    rows: int,
    runs: int,
    copy_rows: int,
    writers: int,
    live_seconds: float,
) -> None:
    plain, parted = create_engine(plain_url), create_engine(parted_url)
    try:
        for engine in (plain, parted):
            await fill(engine, rows)
        started = time.perf_counter()
        report = await partitioning.partition(parted, "1d", ahead=2)
        seconds = time.perf_counter() - started
        print(
            f"partition --interval 1d: {report.rows_moved:,} rows in {seconds:.1f} s "
            f"({report.rows_moved / seconds:,.0f} rows/s), {len(report.partitions)} partitions"
        )
        # Both tables alike before the timed parts: vacuumed (the copied rows' visibility
        # map and hint bits set, as the plain table's were by fill), and the conversion's
        # writes checkpointed, not flushed during the reads and COPY turns that follow.
        for engine in (plain, parted):
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE market_data"))
        async with parted.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("CHECKPOINT"))

        print(f"\n{'read (median ms)':28} {'plain':>9} {'partitioned':>12} {'ratio':>7}")
        plain_reads, parted_reads = reads(plain), reads(parted)
        for name in plain_reads:
            a = await timed(plain_reads[name], runs)
            b = await timed(parted_reads[name], runs)
            print(f"{name:28} {a:9.2f} {b:12.2f} {b / a:6.2f}x")
        hour = TODAY + timedelta(hours=12)
        sql = PLANS["range, 1 hour"]
        assert sql is not None
        touched = await partitions_read(parted, sql, {"a": hour, "b": hour + timedelta(hours=1)})
        print(f"range, 1 hour: partitions read {touched} of {len(report.partitions)}")

        batch = [(7, utcnow(), 100.5, 100.0, 101.0, None, None, None, 5)] * copy_rows
        title = f"COPY {copy_rows:,} ticks (s)"
        print(f"\n{title:28} {'plain':>9} {'partitioned':>12}")
        copies: dict[AsyncEngine, list[float]] = {plain: [], parted: []}
        for turn in range(COPY_TURNS):  # alternating, which goes first alternating too
            for engine in (plain, parted) if turn % 2 == 0 else (parted, plain):
                started = time.perf_counter()
                await write_ticks(engine, batch)
                copies[engine].append(time.perf_counter() - started)
        a, b = statistics.median(copies[plain]), statistics.median(copies[parted])
        title = f"median of {COPY_TURNS}"
        print(f"{title:28} {a:9.2f} {b:12.2f}   partitioned/plain throughput {a / b:.2f}x")

        title = f"{writers} live producers"
        print(f"\n{title:28} {'plain':>9} {'partitioned':>12}")
        rates: dict[AsyncEngine, list[float]] = {plain: [], parted: []}
        tick_wal: dict[AsyncEngine, list[float]] = {plain: [], parted: []}
        for turn, engine in enumerate((plain, parted, parted, plain)):
            producers = Producers(engine, writers, first=turn * 100_000_000)
            _, written = await producers.during(
                lambda e=engine: wal_bytes(e, lambda: asyncio.sleep(live_seconds))
            )
            rates[engine].append(len(producers.latencies) / live_seconds)
            tick_wal[engine].append(written / len(producers.latencies))
        a, b = statistics.mean(rates[plain]), statistics.mean(rates[parted])
        print(f"{'ticks/s, mean of 2':28} {a:9,.0f} {b:12,.0f}   partitioned/plain {b / a:.2f}x")
        per_tick = {engine: statistics.mean(values) for engine, values in tick_wal.items()}

        cutoff_age = utcnow() - (START + timedelta(days=DROPPED_DAYS))
        async with plain.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE market_data SET deleted_at = now() - interval '3650 days' "
                    "WHERE timestamp < :c"
                ),
                {"c": START + timedelta(days=DROPPED_DAYS)},
            )
        async with plain.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE market_data"))

        async def purge(engine: AsyncEngine) -> Any:
            return await purge_soft_deleted(create_session_factory(engine), older_than=cutoff_age)

        during_purge = {
            engine: Producers(engine, writers, first=(5 + n) * 100_000_000)
            for n, engine in enumerate((plain, parted))
        }
        row_time, row_wal = await during_purge[plain].during(
            lambda: wal_bytes(plain, lambda: purge(plain))
        )
        drop_time, drop_wal = await during_purge[parted].during(
            lambda: wal_bytes(parted, lambda: purge(parted))
        )
        # The producers' ticks wrote WAL too: taken out at what a tick wrote in the turns above.
        row_wal -= int(len(during_purge[plain].latencies) * per_tick[plain])
        drop_wal -= int(len(during_purge[parted].latencies) * per_tick[parted])
        left = {}
        for engine in (plain, parted):  # the filled rows (the producers' are of today)
            async with engine.connect() as connection:
                left[engine] = await connection.scalar(
                    text("SELECT count(*) FROM market_data WHERE timestamp < :t"), {"t": TODAY}
                )
        print(
            f"\nretention: {DROPPED_DAYS} days of {DAYS} "
            f"(rows before today left: plain {left[plain]:,}, partitioned {left[parted]:,})"
        )
        print(f"{'':28} {'time (s)':>9} {'WAL (MB)':>12}")
        print(f"{'row purge (plain)':28} {row_time:9.2f} {row_wal / 1e6:12.1f}")
        print(f"{'partition drop':28} {drop_time:9.3f} {drop_wal / 1e6:12.3f}")
        print(f"{'ratio':28} {row_time / drop_time:8.0f}x {row_wal / max(drop_wal, 1):11.0f}x")
        print(f"\n{writers} live producers meanwhile (ms): p50 / p99 / max, ticks")
        for name, engine in (("row purge (plain)", plain), ("partition drop", parted)):
            latencies = during_purge[engine].latencies
            shares = percentiles(latencies)
            print(
                f"{name:28} {shares['p50_ms']:.2f} / {shares['p99_ms']:.2f} / "
                f"{max(latencies):.2f}, {len(latencies):,}"
            )
    finally:
        await plain.dispose()
        await parted.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--copy-rows", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--postgres-url", required=True)
    args = parser.parse_args()
    with ExitStack() as stack:
        urls = [stack.enter_context(throwaway_database("postgresql", args.postgres_url))
                for _ in range(2)]  # fmt: skip
        for url in urls:
            schema.upgrade(url, "head")
        asyncio.run(
            run(*urls, args.rows, args.reads, args.copy_rows, args.writers, args.live_seconds)
        )


if __name__ == "__main__":
    main()
