"""`tickvault export` as a user runs it, on SQLite and PostgreSQL: the file holds the JSON
range's rows value for value, in order, soft-deleted ticks left out; bad arguments are one
line naming what is wrong, and leave no file behind."""

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.e2e.test_api import T0, add_instrument, iso, make_client, post_ticks
from tests.e2e.test_api_arrow import _parsed
from tickvault.cli import app
from tickvault.errors import DatabaseUnavailable
from tickvault.repositories.market_data import MarketDataRepository
from tickvault.repositories.native import NativeReads

START, END = iso(T0 - timedelta(hours=1)), iso(T0 + timedelta(hours=1))


def _load_and_read_json(url: str) -> list[dict[str, Any]]:
    """Ticks of AAPL stored through the API, one soft-deleted; the JSON range of them."""
    with make_client(url) as client:
        add_instrument(client, "AAPL")
        add_instrument(client, "MSFT")
        ticks: list[dict[str, object]] = [
            {"symbol": "AAPL", "timestamp": iso(T0 + timedelta(seconds=n // 2)),
             "price": 100 + n / 3, "volume": n or None}
            for n in range(7)
        ]  # fmt: skip
        ticks.append({"symbol": "MSFT", "timestamp": iso(T0), "price": 1.0})
        ids: list[int] = post_ticks(client, ticks)["ids"]  # type: ignore[assignment]
        assert client.delete(f"/market-data/{ids[3]}").status_code == 200
        page = client.get(
            "/market-data/range",
            params={"instrument_id": 1, "start": START, "end": END, "limit": 1000},
        ).json()
        return [_parsed(item) for item in page["items"]]


def test_export_writes_the_json_range_to_parquet_and_arrow(head_url: str, tmp_path: Path) -> None:
    expected = _load_and_read_json(head_url)
    assert len(expected) == 6
    runner = CliRunner()
    out = tmp_path / "aapl.parquet"
    args = ["--start", START, "--end", END, "--database-url", head_url, "--batch-rows", "4"]
    result = runner.invoke(app, ["export", "--instrument", "AAPL", *args, str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(f"exported 6 ticks of AAPL to {out} in ")
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups == 2  # batches of 4 rows: 4 + 2
    assert parquet.read().to_pylist() == expected
    assert not out.with_name("aapl.parquet.partial").exists()

    arrow_file = tmp_path / "one.arrow"
    by_id = runner.invoke(app, ["export", "--instrument", "1", *args, str(arrow_file)])
    assert by_id.exit_code == 0, by_id.output
    table = pa.ipc.open_file(arrow_file).read_all()  # the IPC file format, not a stream
    assert table.to_pylist() == expected

    empty = tmp_path / "empty.parquet"
    later = ["--start", iso(T0 + timedelta(days=1)), "--end", iso(T0 + timedelta(days=2))]
    nothing = runner.invoke(
        app, ["export", "--instrument", "MSFT", *later, "--database-url", head_url, str(empty)]
    )
    assert nothing.exit_code == 0, nothing.output
    assert nothing.stdout.strip().startswith(f"exported 0 ticks of MSFT to {empty}")
    assert pq.read_table(empty).num_rows == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"--start": "2024-05-06T00:00"},
            "--start '2024-05-06T00:00' has no time zone: add Z or an offset (+02:00)",
        ),
        (
            {"--end": "yesterday"},
            "--end 'yesterday' is not an ISO 8601 date and time (2024-05-06T13:30:00Z)",
        ),
        (
            {"--end": START},
            "end (2024-05-06T12:30:00+00:00) must be after start (2024-05-06T12:30:00+00:00)",
        ),
        (
            {"--start": "2024-05-06T00:00:00+01:00:30"},
            "--start '2024-05-06T00:00:00+01:00:30' is not an ISO 8601 date and time (its "
            "zone is not Z or ±hh:mm at the end)",
        ),
        ({"--instrument": "NOPE"}, "instrument 'NOPE' not found"),
        ({"--instrument": "77"}, "instrument 77 not found"),
        ({"FILE": "ticks.csv"}, "ticks.csv: expected a .parquet or .arrow file name"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(
    head_url: str,
    tmp_path: Path,
    change: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load_and_read_json(head_url)
    folder = tmp_path / "exports"
    folder.mkdir()
    monkeypatch.chdir(folder)
    options = {"--instrument": "AAPL", "--start": START, "--end": END, **change}
    file = options.pop("FILE", "out.parquet")
    args = [part for pair in options.items() for part in pair]
    result = CliRunner().invoke(app, ["export", *args, "--database-url", head_url, file])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {message}"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("reader", ["adbc", "session"])
def test_an_export_cut_short_leaves_no_file(
    head_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """The database goes away after the first batch: no half-written file is left to be
    taken for a whole one, whichever way the ticks are read."""
    _load_and_read_json(head_url)
    kind: Any = NativeReads if reader == "adbc" else MarketDataRepository
    pages = kind.range_batches

    async def one_batch_then_gone(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with aclosing(pages(self, *args, **kwargs)) as batches:
            async for batch in batches:
                yield batch
                raise DatabaseUnavailable("database unavailable: connection lost")

    monkeypatch.setattr(kind, "range_batches", one_batch_then_gone)
    if reader == "session":  # as where the ADBC driver is not installed
        monkeypatch.setattr("tickvault.repositories.native.driver", lambda dialect: None)
    out = tmp_path / "exports" / "aapl.parquet"
    out.parent.mkdir()
    result = CliRunner().invoke(
        app,
        ["export", "--instrument", "AAPL", "--start", START, "--end", END, "--batch-rows", "2",
         "--database-url", head_url, str(out)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == "error: database unavailable: connection lost"
    assert list(out.parent.iterdir()) == []
