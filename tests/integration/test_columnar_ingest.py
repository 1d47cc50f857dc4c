"""Columnar loads on both engines: the same hostile files through the row reader
(``read_ticks``) and as Arrow record batches (``open_ticks``, what ``tickvault ingest``
runs) give the same report, rejection by rejection (position and reason), and store the
same rows; pandas and Polars frames and Arrow tables load as their rows would."""

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration import test_ingest
from tests.integration.test_ingest import BAD_ROWS
from tests.integration.test_readers import CSV
from tickvault.services.market_data import IngestReport, MarketDataService
from tickvault.services.readers import open_ticks, read_ticks

service = test_ingest.service  # the fixture: a service over the same three instruments
Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)
HEADER = ["symbol", "instrument_id", "timestamp", "price", "bid", "ask"]
HEADER += ["open_price", "high_price", "low_price", "volume"]


async def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.text(
                "SELECT instrument_id, timestamp, price, bid, ask, open_price, high_price, "
                "low_price, volume FROM market_data ORDER BY timestamp, price, id"
            )
        )
        return [tuple(row) for row in rows]


async def clear(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM market_data"))


def summary(report: IngestReport) -> tuple[Any, ...]:
    return (
        report.accepted,
        report.rejected,
        [(r.position, r.reason) for r in report.rejections],
        report.failed_batches,
    )


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# ingest's refused rows but the one a CSV file would quote (a comma in its timestamp).
UNQUOTED = [row for row, _ in BAD_ROWS if "," not in text(row.get("timestamp"))]


def hostile_csv(path: Path) -> None:
    """Good rows with each of ingest's refused rows among them, and a few more; nothing
    quoted, so that Arrow reads the whole file."""
    rows: list[dict[str, Any]] = []
    for n in range(60):
        rows.append(
            {"symbol": ("AAPL", "MSFT")[n % 2], "timestamp": T0 + timedelta(seconds=n),
             "price": 100 + n / 8, "bid": "", "volume": n}
        )  # fmt: skip
        if n < len(UNQUOTED):
            rows.append(UNQUOTED[n])
    rows += [
        {"instrument_id": "1", "symbol": "MSFT", "timestamp": T0},  # not the same instrument
        {"instrument_id": "2", "symbol": "MSFT", "timestamp": T0, "price": "1e-400"},
        {"symbol": "AAPL", "timestamp": "2024-05-06 13:30:00.5+02:00", "volume": "007"},
        {"symbol": "AAPL", "timestamp": T0, "volume": "+5"},
        {"symbol": "AAPL", "timestamp": T0, "price": " 1.5"},
        {"symbol": "AAPL", "timestamp": "2024-02-30T00:00:00Z"},
        {"symbol": "AAPL", "timestamp": "0001-01-01T00:00:00+01:00"},
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([text(row.get(name)) for name in HEADER])


# At the edges of what Arrow's casts read: forms the row path takes alike, forms it refuses.
EDGES = [
    {"timestamp": "2024-05-06T13:30Z"},
    {"timestamp": "2024-05-06T15+0200", "price": "+.5"},
    {"timestamp": "2024-05-06T13:30:00.25-0000", "price": "1.e2", "volume": "007"},
    {"timestamp": "2024-05-06T13:30:00"},
    {"price": "nan(1)"},
    {"price": "-Infinity"},
    {"volume": "0x10"},
    {"volume": "0" * 4_300 + "7"},
    {"instrument_id": "0x1", "symbol": ""},
]


def edges_csv(path: Path) -> None:
    """Each of EDGES in a batch of 7 rows (the test's batch size) whose 6 others are good,
    so that the columnar checks alone decide whether the batch is taken whole."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n, edge in enumerate(EDGES):
            for i in range(7):
                row = {"symbol": "AAPL", "timestamp": T0 + timedelta(seconds=7 * n + i),
                       "price": 100 + i, "volume": i}  # fmt: skip
                writer.writerow([text((row | edge if i == 6 else row).get(k)) for k in HEADER])


def long_csv(path: Path) -> None:
    """30,000 good lines, one with too many fields, 10,000 more: Arrow reads the first
    part, the row reader takes over where Arrow stops."""
    with path.open("w") as handle:
        handle.write("symbol,timestamp,price,volume\n")
        for n in range(40_000):
            stamp = (T0 + timedelta(milliseconds=n)).isoformat()
            extra = ",XNAS" if n == 30_000 else ""
            handle.write(f"AAPL,{stamp},{100 + n % 100},{n}{extra}\n")


def reader_csv(path: Path) -> None:
    path.write_text(CSV)


def lines_csv(path: Path) -> None:
    path.write_bytes(
        b"\xef\xbb\xbfsymbol,timestamp,price,volume\r\n"
        b"AAPL,2024-08-01T09:00:00Z,218.5,300\r\n"
        b"AAPL,2024-08-01T09:00:01Z,218,75,XNAS\r\n"
        b"AAPL,2024-08-01T09:00:01Z,218.75\r\n"
        b"\r\n"
        b'AAPL,"2024-08-01T09:00:02Z,219\r\n'
        b"AAPL,2024-08-01T09:00:03Z,219\x00,1\r\n"
        b"AAPL,2024-08-01T09:00:04Z,220,1\r\n"
    )


def hostile_parquet(path: Path) -> None:
    n = 50
    table = pa.table(
        {
            "instrument_id": pa.array([(1, 2, 3, 999)[i % 4] if i % 7 else 1 for i in range(n)]),
            "timestamp": pa.array(
                [T0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("ms", "UTC")
            ),
            "price": pa.array([float("nan") if i == 9 else 1.0 + i for i in range(n)]),
            "high_price": pa.array([None if i % 3 else 5.0 for i in range(n)], pa.float32()),
            "low_price": pa.array([6.0 if i == 12 else None for i in range(n)]),
            "volume": pa.array([-1 if i == 20 else i for i in range(n)], pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=16)


FILES = {
    "hostile.csv": hostile_csv,
    "edges.csv": edges_csv,
    "long.csv": long_csv,
    "readers.csv": reader_csv,
    "lines.csv": lines_csv,
    "hostile.parquet": hostile_parquet,
}


@pytest.mark.parametrize("name", FILES)
async def test_a_file_loads_as_columns_exactly_as_rows(
    name: str, service: MarketDataService, engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / name
    FILES[name](path)
    batch_size = 1_000 if name == "long.csv" else 7

    by_rows = await service.ingest(read_ticks(path), batch_size=batch_size)
    rows_stored = await stored(engine)
    await clear(engine)
    by_columns = await service.ingest(open_ticks(path), batch_size=batch_size)

    assert summary(by_columns) == summary(by_rows)
    assert await stored(engine) == rows_stored
    assert by_rows.accepted > 0
    assert by_rows.rejected > 0
    if name in ("hostile.csv", "edges.csv", "hostile.parquet"):
        assert not any(isinstance(batch, list) for batch in open_ticks(path))  # all Arrow


async def test_the_long_file_refuses_its_one_bad_line_at_its_position(
    service: MarketDataService, tmp_path: Path
) -> None:
    path = tmp_path / "long.csv"
    long_csv(path)
    report = await service.ingest(open_ticks(path), batch_size=1_000)
    assert (report.accepted, report.rejected) == (39_999, 1)
    assert [(r.position, r.reason) for r in report.rejections] == [
        (30_000, "line 30002: 5 fields, the header has 4: extra 'XNAS'")
    ]


def frame_rows() -> list[dict[str, Any]]:
    return [
        {
            "symbol": ("AAPL", "MSFT")[n % 2],
            "timestamp": T0 + timedelta(microseconds=1_000_001 * n),
            "price": 100 + n / 16,
            "volume": None if n % 5 == 0 else n,
        }
        for n in range(300)
    ]


FRAMES = {
    "pyarrow": lambda rows: pa.Table.from_pylist(rows),
    "pandas": lambda rows: pd.DataFrame(rows).astype({"volume": "Int64"}),
    "pandas-float-volume": lambda rows: pd.DataFrame(rows),  # NaN where no volume
    "polars": lambda rows: pl.DataFrame(rows),
}


@pytest.mark.parametrize("kind", FRAMES)
async def test_a_frame_loads_as_its_rows_would(
    kind: str, service: MarketDataService, engine: AsyncEngine
) -> None:
    rows = frame_rows()
    by_rows = await service.ingest(rows, batch_size=64)
    rows_stored = await stored(engine)
    await clear(engine)

    report = await service.ingest(FRAMES[kind](rows), batch_size=64)

    assert summary(report) == summary(by_rows) == (300, 0, [], [])
    assert report.batches == 5
    assert await stored(engine) == rows_stored


async def test_a_frame_with_refused_rows_names_them_and_stores_the_rest(
    service: MarketDataService, engine: AsyncEngine
) -> None:
    rows = frame_rows()
    rows[7]["symbol"] = "DEAD"
    rows[200]["price"] = float("inf")
    frame = pl.DataFrame(rows)

    report = await service.ingest(frame, batch_size=64)

    assert (report.accepted, report.rejected) == (298, 2)
    assert [(r.position, r.reason) for r in report.rejections] == [
        (7, "instrument 3 is inactive"),
        (200, "price inf is not finite"),
    ]
    assert len(await stored(engine)) == 298


async def test_a_keyed_columnar_load_resumes_after_its_last_commit(
    service: MarketDataService, engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "long.csv"
    long_csv(path)
    source = open_ticks(path)

    def breaking() -> Any:
        for n, batch in enumerate(source):
            if n == 2:
                raise OSError("the disk went away")
            yield batch

    with pytest.raises(OSError, match="the disk went away"):
        await service.ingest(type(source)(breaking()), batch_size=1_000, source_key="long")
    first = len(await stored(engine))
    assert 0 < first < 39_999

    report = await service.ingest(open_ticks(path), batch_size=1_000, source_key="long")

    assert report.resumed_from == first
    assert (report.accepted, report.rejected) == (39_999 - first, 1)
    volumes = [row[-1] for row in await stored(engine)]
    assert sorted(volumes) == [n for n in range(40_000) if n != 30_000]
