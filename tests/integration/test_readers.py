"""CSV and Parquet files through the readers into ingest, on both engines."""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickvault.errors import ValidationError
from tickvault.models import Instrument, MarketData
from tickvault.services.market_data import MarketDataService
from tickvault.services.readers import read_csv, read_csv_stream, read_parquet, read_ticks

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 8, 1, 9, 0, tzinfo=UTC)

CSV = """symbol,timestamp,price,bid,ask,volume,venue
AAPL,2024-08-01T09:00:00Z,218.5,218.4,218.6,100,XNAS
AAPL,2024-08-01T09:00:01.250000+00:00,218.75,,,,XNAS
AAPL,2024-08-01T09:00:02,218.0,,,5,XNAS
NOPE,2024-08-01T09:00:03Z,1,,,1,XNAS
AAPL,2024-08-01T09:00:04Z,abc,,,1,XNAS
"""


@pytest.fixture
async def service(session_factory: Sessions) -> MarketDataService:
    async with session_factory.begin() as session:
        session.add(Instrument(symbol="AAPL", name="Apple"))
    return MarketDataService(session_factory)


async def _count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(MarketData)) or 0)


async def test_a_csv_file_with_bad_rows(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(CSV)

    report = await service.ingest(read_ticks(path))

    assert (report.accepted, report.rejected) == (2, 3)
    assert [(r.position, r.reason.split(" ")[0]) for r in report.rejections] == [
        (2, "timestamp"),
        (3, "unknown"),
        (4, "price"),
    ]
    assert await _count(session_factory) == 2

    again = await service.ingest(read_csv(path))  # the same file again appends again
    assert again.accepted == 2
    assert await _count(session_factory) == 4


async def test_a_parquet_file_with_its_own_column_names(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.parquet"
    table = pa.table(
        {
            "sym": ["AAPL"] * 1000,
            "ts": pa.array(
                [T0 + timedelta(milliseconds=i) for i in range(1000)],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "last": [200 + i / 1000 for i in range(1000)],
            "volume": list(range(1000)),
        }
    )
    pq.write_table(table, path, row_group_size=128)

    report = await service.ingest(
        read_parquet(path, columns={"sym": "symbol", "ts": "timestamp", "last": "price"}),
        batch_size=300,
    )

    assert (report.accepted, report.rejected, report.batches) == (1000, 0, 4)
    async with session_factory() as session:
        last = await session.scalar(select(MarketData).order_by(MarketData.timestamp.desc()))
    assert last is not None
    assert (last.timestamp, last.price, last.volume) == (
        T0 + timedelta(milliseconds=999),
        200.999,
        999,
    )


def test_files_without_the_needed_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("when,price\n2024-01-01T00:00:00Z,1\n")
    with pytest.raises(ValidationError, match="missing column symbol or instrument_id, timestamp"):
        next(read_csv(path))
    with pytest.raises(ValidationError, match=r"expected a \.csv or \.parquet file"):
        read_ticks(tmp_path / "prices.xlsx")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValidationError, match="empty file"):
        next(read_csv(empty))


async def test_a_csv_with_a_byte_order_mark_is_read(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfsymbol,timestamp,price\r\nAAPL,2024-08-01T09:00:00Z,218.5\r\n")

    report = await service.ingest(read_ticks(path))

    assert (report.accepted, report.rejected) == (1, 0)
    assert await _count(session_factory) == 1


async def test_a_line_with_more_fields_than_the_header_is_refused_not_cut(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "symbol,timestamp,price\n"
        "AAPL,2024-08-01T09:00:00Z,218.5\n"
        "AAPL,2024-08-01T09:00:01Z,218,75,XNAS\n"  # a decimal comma: 218.75 or 218?
        "AAPL,2024-08-01T09:00:02Z,219\n"
    )

    report = await service.ingest(read_ticks(path))

    assert (report.accepted, report.rejected) == (2, 1)
    assert [(r.position, r.reason) for r in report.rejections] == [
        (1, "line 3: 5 fields, the header has 3: extra '75', 'XNAS'")
    ]
    async with session_factory() as session:
        prices = list(await session.scalars(select(MarketData.price).order_by(MarketData.id)))
    assert prices == [218.5, 219.0]


async def test_a_line_with_fewer_fields_than_the_header_is_refused_not_filled(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "symbol,timestamp,price,volume\n"
        "AAPL,2024-08-01T09:00:00Z,218.5,300\n"
        "AAPL,2024-08-01T09:00:01Z,218.75\n"  # cut short: its volume is not known
        "AAPL,2024-08-01T09:00:02Z\n"
        "AAPL,2024-08-01T09:00:03Z,219,100\n"
    )

    report = await service.ingest(read_ticks(path))

    assert (report.accepted, report.rejected) == (2, 2)
    assert [(r.position, r.reason) for r in report.rejections] == [
        (1, "line 3: 3 fields, the header has 4: no 'volume'"),
        (2, "line 4: 2 fields, the header has 4: no 'price', 'volume'"),
    ]
    async with session_factory() as session:
        stored = (await session.execute(select(MarketData.price, MarketData.volume))).all()
    assert sorted(stored) == [(218.5, 300), (219.0, 100)]


async def test_an_unterminated_quote_refuses_its_line_and_keeps_the_rows_after_it(
    service: MarketDataService, session_factory: Sessions, tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    lines = [f"AAPL,2024-08-01T09:00:{s:02d}Z,{200 + s}" for s in range(6)]
    lines[2] = 'AAPL,"2024-08-01T09:00:02Z,202'
    lines[4] = 'AAPL,"2024-08-01T09:00:04Z",204'  # a closing quote further on
    path.write_text("symbol,timestamp,price\n" + "\n".join(lines) + "\n")

    report = await service.ingest(read_ticks(path))

    assert (report.accepted, report.rejected) == (5, 1)
    assert [(r.position, r.reason) for r in report.rejections] == [
        (2, "line 4: a quoted field runs past the end of the line (an unterminated quote?)")
    ]
    async with session_factory() as session:
        prices = list(await session.scalars(select(MarketData.price).order_by(MarketData.id)))
    assert prices == [200, 201, 203, 204, 205]


def test_an_unterminated_quote_in_a_large_file_is_one_refused_line(tmp_path: Path) -> None:
    """Past csv's field size limit (128 KiB) the csv module itself gives up: still one line."""
    path = tmp_path / "ticks.csv"
    with path.open("w") as handle:
        handle.write("symbol,timestamp,price\n")
        handle.write('AAPL,"2024-08-01T09:00:00Z,1\n')
        for n in range(10_000):
            handle.write(f"AAPL,2024-08-01T09:00:00Z,{n}\n")

    rows = list(read_csv(path))

    assert len(rows) == 10_001
    assert getattr(rows[0], "reason", "").startswith("line 2: a quoted field runs past")
    assert rows[-1]["price"] == "9999"


def test_damaged_and_misnamed_parquet_files_are_refused_in_one_line(tmp_path: Path) -> None:
    table = pa.table(
        {"symbol": ["AAPL"] * 100, "timestamp": pa.array([T0] * 100, pa.timestamp("us", "UTC"))}
    )
    good = tmp_path / "good.parquet"
    pq.write_table(table, good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-100])
    misnamed = tmp_path / "ticks.parquet"
    misnamed.write_text("symbol,timestamp\nAAPL,2024-08-01T09:00:00Z\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")

    for path, reason in [
        (truncated, "truncated or damaged Parquet file"),
        (misnamed, "not a Parquet file (it does not start with PAR1: a CSV file named .parquet?)"),
        (empty, "empty file, not Parquet"),
    ]:
        with pytest.raises(ValidationError) as caught:
            read_ticks(path)  # at once, before any row is asked for
        assert str(caught.value).startswith(f"{path}: {reason}")
        assert "\n" not in str(caught.value)


async def test_an_upload_refuses_the_same_lines_as_a_file_load(service: MarketDataService) -> None:
    """POST /market-data/csv sends an upload's rows through the live writer (``store``)."""
    text = (
        "symbol,timestamp,price\n"
        "AAPL,2024-08-01T09:00:00Z,218.5\n"
        "AAPL,2024-08-01T09:00:01Z,218,75\n"
        'AAPL,"2024-08-01T09:00:02Z,219\n'
        "AAPL,2024-08-01T09:00:03Z,219.5\n"
    )
    try:
        rows = list(read_csv_stream(io.StringIO(text, newline=""), name="upload.csv"))
        report = await service.store(rows, ignore_unknown_fields=True)
    finally:
        await service.aclose()

    assert report.accepted == 2
    assert [(r.position, r.reason) for r in report.rejections] == [
        (1, "line 3: 4 fields, the header has 3: extra '75'"),
        (2, "line 4: a quoted field runs past the end of the line (an unterminated quote?)"),
    ]
