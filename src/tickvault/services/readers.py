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

``open_ticks`` gives the same file as Arrow record batches (``TickBatches``, with pyarrow:
``tickvault.services.tick_batches``), which ``ingest`` validates and writes a column at a
time; without pyarrow, a CSV file comes as rows.
"""

import csv
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tickvault.errors import ValidationError
from tickvault.services.validation import UnreadableRow

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


@dataclass(frozen=True)
class TickBatches:
    """Input for ``MarketDataService.ingest`` a batch at a time: pyarrow record batches with
    tick column names, or lists of row mappings (the part of a file that has to be read row
    by row). ``name`` says where it comes from."""

    batches: Iterable[Any]
    name: str = "<batches>"

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


def check_header(path: Path | str, names: list[str], columns: Mapping[str, str]) -> None:
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
    """The rows of a CSV file with a header (UTF-8, with or without a BOM), one dict at a
    time. The header is checked at once; the file is closed when the rows run out."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        read_csv_stream(handle, name=str(path), columns=columns)  # the header, checked now
    return _csv_file_rows(path, columns)


def csv_header(path: Path, columns: Mapping[str, str] | None) -> list[str]:
    """The names of a CSV file's columns, mapped by ``columns`` (the header checked)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return _header(handle, str(path), dict(columns or {}), [])[1]


def _csv_file_rows(path: Path, columns: Mapping[str, str] | None) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from read_csv_stream(handle, name=str(path), columns=columns)


def read_csv_stream(
    handle: IO[str], *, name: str = "<csv>", columns: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of CSV text with a header (an open file, an upload), one dict at a time.

    A line the reader cannot take as it stands is refused, not guessed at: it comes as an
    ``UnreadableRow`` with the reason and its line number (``ingest`` lists it with the
    other refused rows), and the lines after it are read on their own:

    - more fields than the header (``AAPL,…,1,XNAS`` under a 3-column header), or fewer
      (a line cut short: a file copied while it was being written);
    - a quoted field that runs past the end of its line (an unterminated quote: tick files
      have no line breaks inside a value), which would otherwise swallow the rows after it.
    """
    kept: list[str] = []  # the physical lines of the record being read
    reader, names = _header(handle, name, dict(columns or {}), kept)
    return _csv_rows(handle, reader, kept, names, name)


def _header(
    handle: IO[str], name: str, mapping: Mapping[str, str], kept: list[str]
) -> tuple[Any, list[str]]:
    """The csv reader past the header, and the column names (mapped), checked."""
    reader = csv.reader(_keeping(handle, kept))
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValidationError(f"{name}: line 1: not readable CSV ({exc})") from exc
    if header is None:
        raise ValidationError(f"{name}: empty file, expected a header row")
    if header and header[0].startswith("\ufeff"):  # a BOM the decoder kept
        header[0] = header[0][1:]
    check_header(name, header, mapping)
    return reader, [mapping.get(column, column) for column in header]


def _csv_rows(
    handle: IO[str], reader: Any, kept: list[str], names: list[str], name: str
) -> Iterator[dict[str, Any]]:
    width = len(names)
    read_before = 0  # lines read before the current reader's first
    while True:
        kept.clear()
        line = read_before + reader.line_num + 1  # the record's first line
        try:
            values = next(reader)
            problem = None
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"{name}: not UTF-8 text at or after line {line} ({exc.reason})"
            ) from exc
        except csv.Error as exc:  # a field past csv.field_size_limit(), say
            values, problem = [], f"not readable CSV ({exc})"
        if len(kept) > 1:
            problem = "a quoted field runs past the end of the line (an unterminated quote?)"
        if problem is not None:
            # Refuse the record's first line alone and read the lines after it again.
            yield UnreadableRow(_fields(names, kept[:1]), f"line {line}: {problem}")
            again = kept[1:]
            read_before = line
            reader = csv.reader(_keeping(itertools.chain(again, handle), kept))
            continue
        if not values:
            continue  # a blank line
        row = dict(zip(names, values, strict=False))
        if len(values) > width:
            extra = ", ".join(repr(value) for value in values[width:])
            yield UnreadableRow(
                row, f"line {line}: {len(values)} fields, the header has {width}: extra {extra}"
            )
            continue
        if len(values) < width:
            missing = ", ".join(repr(column) for column in names[len(values) :])
            yield UnreadableRow(
                row,
                f"line {line}: {len(values)} fields, the header has {width}: no {missing}",
            )
            continue
        yield row


def _fields(names: list[str], line: list[str]) -> dict[str, str]:
    """What can be read of one refused line, for the rejects file."""
    try:
        values = next(csv.reader(text.rstrip("\r\n") for text in line), [])
    except csv.Error:
        values = []
    return dict(zip(names, values, strict=False))


def _keeping(lines: Iterable[str], kept: list[str]) -> Iterator[str]:
    """``lines``, each also appended to ``kept``."""
    for line in lines:
        kept.append(line)
        yield line


def read_parquet(
    path: str | Path, *, columns: Mapping[str, str] | None = None, batch_rows: int = 65_536
) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, read a row group slice at a time (needs pyarrow). The
    file and its columns are checked at once."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValidationError(
            "reading Parquet needs pyarrow: pip install 'tickvault[parquet]'"
        ) from exc
    path = Path(path)
    mapping = dict(columns or {})
    with open_parquet(pq, path) as parquet:  # the file and its columns, checked now
        names = list(parquet.schema_arrow.names)
    check_header(path, names, mapping)
    wanted = [name for name in names if mapping.get(name, name) in KNOWN_COLUMNS]
    return _parquet_rows(pq, path, wanted, mapping, batch_rows)


def open_parquet(pq: Any, path: Path, **options: Any) -> Any:
    try:
        return pq.ParquetFile(path, **options)
    except ARROW_ERRORS as exc:
        raise ValidationError(f"{path}: {_not_parquet(path, exc)}") from exc


def _parquet_rows(
    pq: Any, path: Path, wanted: list[str], mapping: dict[str, str], batch_rows: int
) -> Iterator[dict[str, Any]]:
    done = 0
    with open_parquet(pq, path) as parquet:
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
                for row in batch.to_pylist():
                    yield {mapping.get(k, k): v for k, v in row.items()}
                done += batch.num_rows
        except ARROW_ERRORS as exc:
            raise damaged_parquet(path, done, exc) from exc


def damaged_parquet(path: Path, done: int, exc: BaseException) -> ValidationError:
    after = f" after its first {done:,} rows" if done else ""
    return ValidationError(
        f"{path}: damaged Parquet file, not readable{after} ({_first_line(exc)})"
    )


# What pyarrow raises for a file it cannot read (ArrowInvalid is a ValueError, ArrowIOError
# an OSError; a value Python cannot hold, such as a year-0 timestamp, a ValueError too).
ARROW_ERRORS = (ValueError, OSError, OverflowError)
PARQUET_MAGIC = b"PAR1"


def _not_parquet(path: Path, exc: BaseException) -> str:
    """What is wrong with a file pyarrow would not open, from its first bytes."""
    with path.open("rb") as handle:
        start = handle.read(len(PARQUET_MAGIC))
    if not start:
        return "empty file, not Parquet"
    if start != PARQUET_MAGIC:
        return "not a Parquet file (it does not start with PAR1: a CSV file named .parquet?)"
    return f"truncated or damaged Parquet file ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def open_ticks(path: str | Path, *, columns: Mapping[str, str] | None = None) -> TickBatches:
    """CSV or Parquet, by the file's extension, as record batches for a columnar load (the
    file checked now). Without pyarrow a CSV file comes as rows, as ``read_csv`` reads it."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        from tickvault.services import tick_batches
    except ImportError:  # pragma: no cover - depends on the install
        rows = read_ticks(path, columns=columns)
        return TickBatches(iter(lambda: list(itertools.islice(rows, 1_000)), []), str(path))
    if suffix == ".parquet":
        return tick_batches.parquet_batches(path, columns or {})
    if suffix in (".csv", ".txt"):
        return tick_batches.csv_batches(path, columns or {})
    raise ValidationError(f"{path}: expected a .csv or .parquet file")
