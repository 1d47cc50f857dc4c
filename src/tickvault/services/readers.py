"""Tick files to feed ``MarketDataService.ingest``: CSV and Parquet, read as a stream.

Columns (a header row in CSV, column names in Parquet), any order, extra columns ignored:

- ``symbol`` or ``instrument_id``: which instrument (one of the two is required);
- ``timestamp``: ISO 8601 with a time zone (``2024-05-06T13:30:00.25Z``), or in Parquet a
  timestamp type with a zone;
- ``price``, ``bid``, ``ask``, ``open_price``, ``high_price``, ``low_price``: numbers, empty
  for none;
- ``volume``: a whole number, empty for none.

``columns={"ts": "timestamp", "last": "price"}`` maps a file's own names onto these.
Validation is ``ingest``'s job: a reader only turns the file into rows.
"""

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from tickvault.errors import ValidationError

KNOWN_COLUMNS = (
    "symbol",
    "instrument_id",
    "timestamp",
    "price",
    "bid",
    "ask",
    "open_price",
    "high_price",
    "low_price",
    "volume",
)


def _check_header(path: Path | str, names: list[str], columns: Mapping[str, str]) -> None:
    present = {columns.get(name, name) for name in names}
    missing = [name for name in ("timestamp",) if name not in present]
    if not ({"symbol", "instrument_id"} & present):
        missing.insert(0, "symbol or instrument_id")
    if missing:
        raise ValidationError(
            f"{path}: missing column {', '.join(missing)} (columns found: {', '.join(names)})"
        )


def read_csv(
    path: str | Path, *, columns: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of a CSV file with a header, one dict at a time."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        yield from read_csv_stream(handle, name=str(path), columns=columns)


def read_csv_stream(
    handle: IO[str], *, name: str = "<csv>", columns: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of CSV text with a header (an open file, an upload), one dict at a time."""
    mapping = dict(columns or {})
    reader = csv.DictReader(handle)
    try:
        if reader.fieldnames is None:
            raise ValidationError(f"{name}: empty file, expected a header row")
        _check_header(name, list(reader.fieldnames), mapping)
        for row in reader:
            yield {mapping.get(k, k): v for k, v in row.items() if k is not None}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValidationError(
            f"{name}: line {reader.line_num + 1}: not readable CSV ({exc})"
        ) from exc


def read_parquet(
    path: str | Path, *, columns: Mapping[str, str] | None = None, batch_rows: int = 65_536
) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, read a row group slice at a time (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValidationError(
            "reading Parquet needs pyarrow: pip install 'tickvault[parquet]'"
        ) from exc
    path = Path(path)
    mapping = dict(columns or {})
    parquet = pq.ParquetFile(path)
    names = list(parquet.schema_arrow.names)
    _check_header(path, names, mapping)
    wanted = [name for name in names if mapping.get(name, name) in KNOWN_COLUMNS]
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
        for row in batch.to_pylist():
            yield {mapping.get(k, k): v for k, v in row.items()}


def read_ticks(
    path: str | Path, *, columns: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """CSV or Parquet, by the file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path, columns=columns)
    if suffix in (".csv", ".txt"):
        return read_csv(path, columns=columns)
    raise ValidationError(f"{path}: expected a .csv or .parquet file")
