"""The read path per revision: latest tick, the plain correlated query and a one-hour range,
with an instrument idle since the first row and one that never traded.

Per engine, three throwaway databases filled alike (``tickvault.bench.data``: 50 trading
instruments, N ticks 10 ms apart), migrated to the baseline, to f79e2702f75c and to
a7c3e9d15b42; then instrument 51 gets one tick older than all others and instrument 52
none. Each read runs ``--reads`` times after a warm-up, the databases taking turns; medians.

    python benchmarks/read_path.py --rows 1000000 \
        --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tickvault.bench import cases, data
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.types import UTCDateTime
from tickvault.repositories.market_data import MarketDataRepository

REVISIONS = {"baseline": "4524473b46fb", "f79e2702f75c": "f79e2702f75c",
             "a7c3e9d15b42": "a7c3e9d15b42"}  # fmt: skip
IDLE, NEVER = 51, 52


async def _add_idle_and_never(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for i in (IDLE, NEVER):
                await connection.execute(
                    text("INSERT INTO instruments (id, symbol, name) VALUES (:i, :s, :s)"),
                    {"i": i, "s": f"S{i}"},
                )
            await connection.execute(
                text(
                    "INSERT INTO market_data (instrument_id, timestamp, price, created_at, "
                    f"updated_at) VALUES ({IDLE}, :t, 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ).bindparams(bindparam("t", type_=UTCDateTime())),
                {"t": datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC)},  # before every other tick
            )
        if engine.dialect.name == "postgresql":
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


def _latest_reads(
    engine: AsyncEngine, kept: AsyncSession
) -> dict[str, Callable[[], Awaitable[Any]]]:
    async def latest(ids: list[int] | None) -> None:
        async with create_session_factory(engine)() as session:
            await MarketDataRepository(session).latest(ids)

    return {
        "latest(), all 52": lambda: latest(None),
        # As benchmarks/ingest.py times it: the query alone, in a session already open.
        "latest(), all 52, open session": lambda: MarketDataRepository(kept).latest(),
        "latest([idle])": lambda: latest([IDLE]),
        "latest([never traded])": lambda: latest([NEVER]),
    }


PLAIN = {
    "plain latest, all 52 (SQL)": "latest tick, 50 instruments",
    "one hour of one instrument (SQL)": "one hour of one instrument",
}


async def _measure(urls: dict[str, str], runs: int, repeat: int) -> dict[str, dict[str, float]]:
    engines = {label: create_engine(url) for label, url in urls.items()}
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(repeat):
            for label, engine in engines.items():
                for name, read in PLAIN.items():
                    ms = await cases.read_latency(engine, read, runs)
                    samples.setdefault((name, label), []).append(ms)
                if label == "baseline":  # the repository needs deleted_at
                    continue
                async with create_session_factory(engine)() as kept:
                    for name, work in _latest_reads(engine, kept).items():
                        ms = await cases.median_ms(work, runs)
                        samples.setdefault((name, label), []).append(ms)
    finally:
        for engine in engines.values():
            await engine.dispose()
    out: dict[str, dict[str, float]] = {}
    for (name, label), values in samples.items():
        out.setdefault(name, {})[label] = statistics.median(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=10, help="runs per read and turn")
    parser.add_argument("--repeat", type=int, default=3, help="turns (medians kept)")
    parser.add_argument("--postgres-url", help="server to create throwaway databases on")
    parser.add_argument(
        "--revisions",
        default=",".join(REVISIONS),
        help=f"which of {', '.join(REVISIONS)} (comma-separated; all by default)",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    chosen = {label: REVISIONS[label] for label in args.revisions.split(",")}
    engines = ([] if args.skip_sqlite else ["sqlite"]) + (
        ["postgresql"] if args.postgres_url else []
    )
    for engine in engines:
        with ExitStack() as stack:
            urls = {}
            for label, revision in chosen.items():
                print(f"{engine}: filling {args.rows:,} rows at {label}", flush=True)
                urls[label] = stack.enter_context(data.throwaway(engine, args.postgres_url))
                data.prepare(urls[label], revision, args.rows)
                asyncio.run(_add_idle_and_never(urls[label]))
            results = asyncio.run(_measure(urls, args.reads, args.repeat))
        print(f"\n{engine}, {args.rows:,} ticks, ms (median)")
        print(f"{'read':<36}" + "".join(f"{label:>16}" for label in chosen))
        for name, figures in results.items():
            cells = [f"{figures[k]:>16.3f}" if k in figures else f"{'-':>16}" for k in chosen]
            print(f"{name:<36}" + "".join(cells))
        print(flush=True)


if __name__ == "__main__":
    main()
