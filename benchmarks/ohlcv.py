"""OHLCV bars with exact volume sums against the plain SUM they replaced, side by side.

Per engine, one throwaway database at head filled as ``tickvault.bench.data`` fills it
(50 instruments, N ticks 10 ms apart: N / 50 ticks for instrument 1 over N / 100 seconds).
For each interval, the bars of instrument 1 over the whole range are read with the query
``MarketDataRepository.ohlcv`` runs (PostgreSQL: ``sum(volume)``, a NUMERIC; SQLite: the
sums of volume's two 32-bit halves) and with the old one (``sum(volume)`` on both, whose
SQLite form fails past 64 bits, VWAP divided in SQL); turns alternate, medians.

    python benchmarks/ohlcv.py --rows 1000000 --postgres-url postgresql://postgres@127.0.0.1/test
"""

import argparse
import asyncio
import statistics
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.bench import cases, data
from tickvault.database.engine import create_engine
from tickvault.repositories.bars import Bar, ohlcv_query, ranked_ticks
from tickvault.services import schema

INTERVALS = {"1s": 1, "1m": 60, "1h": 3600}
START = datetime.fromtimestamp(data.START_EPOCH, UTC)


def plain_sum_query(dialect: str, seconds: int, end: datetime) -> Select[Any]:
    """The query before exact sums: SUM(volume), and VWAP divided in SQL."""
    ranked = ranked_ticks(dialect, 1, seconds, START, end)
    traded = func.sum(ranked.c.volume)
    return (
        select(
            ranked.c.bucket,
            func.max(case((ranked.c.first == 1, ranked.c.price))).label("open"),
            func.max(ranked.c.price).label("high"),
            func.min(ranked.c.price).label("low"),
            func.max(case((ranked.c.last == 1, ranked.c.price))).label("close"),
            traded.label("volume"),
            (func.sum(ranked.c.price * ranked.c.volume) / func.nullif(traded, 0)).label("vwap"),
            func.count().label("ticks"),
        )
        .group_by(ranked.c.bucket)
        .order_by(ranked.c.bucket)
    )


async def _rows(engine: AsyncEngine, query: Select[Any]) -> list[Any]:
    """What is timed: the query and its rows (the Python around them is alike)."""
    async with engine.connect() as connection:
        return list((await connection.execute(query)).mappings().all())


async def _measure(url: str, rows: int, runs: int, repeat: int) -> dict[str, dict[str, float]]:
    engine = create_engine(url)
    dialect = engine.dialect.name
    end = datetime.fromtimestamp(data.START_EPOCH + rows // data.TICKS_PER_SECOND + 1, UTC)
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for interval, seconds in INTERVALS.items():
            exact = ohlcv_query(dialect, 1, seconds, START, end)
            plain = plain_sum_query(dialect, seconds, end)
            new = [Bar.from_row(row, seconds).volume for row in await _rows(engine, exact)]
            old = [int(row["volume"]) for row in await _rows(engine, plain)]
            assert new == old, interval  # the same sums, where the plain one does not overflow
            for _ in range(repeat):
                for label, query in (("plain", plain), ("exact", exact)):

                    async def work(q: Select[Any] = query) -> None:
                        await _rows(engine, q)

                    ms = await cases.median_ms(work, runs)
                    samples.setdefault((interval, label), []).append(ms)
    finally:
        await engine.dispose()
    out: dict[str, dict[str, float]] = {}
    for (interval, label), values in samples.items():
        out.setdefault(interval, {})[label] = statistics.median(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=10, help="runs per query and turn")
    parser.add_argument("--repeat", type=int, default=3, help="turns (medians kept)")
    parser.add_argument("--postgres-url", help="server to create throwaway databases on")
    args = parser.parse_args()
    for engine in ["sqlite"] + (["postgresql"] if args.postgres_url else []):
        with data.throwaway(engine, args.postgres_url) as url:
            print(f"{engine}: filling {args.rows:,} rows", flush=True)
            data.prepare(url, schema.head_revision(), args.rows)
            results = asyncio.run(_measure(url, args.rows, args.reads, args.repeat))
        print(f"\n{engine}, {args.rows:,} ticks, instrument 1 ({args.rows // 50:,} ticks), ms")
        print(f"{'interval':<10}{'plain SUM':>12}{'exact':>12}{'exact/plain':>14}")
        for interval, figures in results.items():
            ratio = figures["exact"] / figures["plain"]
            print(f"{interval:<10}{figures['plain']:>12.2f}{figures['exact']:>12.2f}{ratio:>14.2f}")
        print(flush=True)


if __name__ == "__main__":
    main()
