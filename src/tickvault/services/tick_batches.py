"""Tick files and frames as Arrow record batches, for ``MarketDataService.ingest``.

CSV through pyarrow's streaming reader (``pyarrow.csv.open_csv``, every field as text, as
the row reader gives it), Parquet a slice of row groups at a time, a pyarrow Table, pandas
or Polars frame in record batches: never the whole file in memory.

A CSV file pyarrow would read differently from the row reader (``read_csv``: a quote, a NUL
byte, repeated column names, a field past ``csv.field_size_limit()``, a line with too many
or too few fields, text that is not UTF-8) goes on as rows from that reader, from the first
row Arrow had not passed on, so refused lines keep their reasons and positions.

Needs pyarrow; imported only when it is there.
"""

import csv
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from tickvault.errors import ValidationError
from tickvault.services import readers
from tickvault.services.readers import KNOWN_COLUMNS, TickBatches

ROW_CHUNK = 1_000  # rows per list when a file goes on as rows
BATCH_ROWS = 65_536  # rows per record batch of a frame (already in memory)
# Rows per record batch read from a Parquet file: the load's own batch (ingest's default).
# Larger batches held more memory at a long load's peak, and were no faster.
PARQUET_BATCH_ROWS = 10_000
# Arrow's default (1 MiB) held four times the blocks in flight, and read no faster.
# Likewise Parquet without pre-buffering.
CSV_BLOCK_BYTES = 1 << 18
# The CSV reader's memory from malloc rather than Arrow's default pool (mimalloc here),
# which kept more of the freed blocks resident over a load: a lower peak RSS.
CSV_MEMORY = pa.system_memory_pool()


def csv_batches(path: Path, columns: Mapping[str, str]) -> TickBatches:
    """A CSV file with a header as record batches (the header checked now)."""
    header = readers.csv_header(path, columns)
    return TickBatches(_csv(path, columns, header), str(path))


def _csv(path: Path, columns: Mapping[str, str], names: list[str]) -> Iterator[Any]:
    passed = 0
    if len(set(names)) == len(names) and not _has_quote_or_nul(path):
        for batch in _arrow_csv(path, names):
            if batch is None:
                break  # the row reader goes on from here
            yield batch
            passed += batch.num_rows
        else:
            return
    rows = islice(readers.read_csv(path, columns=columns), passed, None)
    while chunk := list(islice(rows, ROW_CHUNK)):
        yield chunk


def _arrow_csv(path: Path, names: list[str]) -> Iterator[pa.RecordBatch | None]:
    """The file's record batches; ``None`` at the first one Arrow would read differently
    from the row reader, or could not read (a line of another width, not UTF-8)."""
    limit = csv.field_size_limit()
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(
                column_names=names, skip_rows=1, block_size=CSV_BLOCK_BYTES
            ),
            parse_options=pcsv.ParseOptions(newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
            memory_pool=CSV_MEMORY,
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            if any(_longest(column) > limit for column in batch.columns):
                break
            yield batch
    except (pa.ArrowInvalid, OSError):
        pass
    yield None


def _has_quote_or_nul(path: Path) -> bool:
    """Whether a line after the first (the header, which the row reader parses) holds a
    quote or a NUL byte."""
    with path.open("rb") as handle:
        handle.readline()
        for block in iter(lambda: handle.read(1 << 20), b""):
            if b'"' in block or b"\0" in block:
                return True
    return False


def _longest(column: pa.Array) -> int:
    return int(pc.max(pc.binary_length(column)).as_py() or 0)


def parquet_batches(
    path: Path, columns: Mapping[str, str], batch_rows: int = PARQUET_BATCH_ROWS
) -> TickBatches:
    """A Parquet file as record batches of the tick columns (file and columns checked now)."""
    mapping = dict(columns)
    with readers.open_parquet(pq, path) as parquet:
        names = list(parquet.schema_arrow.names)
    readers.check_header(path, names, mapping)
    wanted = [name for name in names if mapping.get(name, name) in KNOWN_COLUMNS]
    return TickBatches(_parquet(path, wanted, mapping, batch_rows), str(path))


def _parquet(
    path: Path, wanted: list[str], mapping: dict[str, str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    done = 0
    with readers.open_parquet(pq, path, pre_buffer=False) as parquet:
        batches = parquet.iter_batches(batch_size=batch_rows, columns=wanted)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except readers.ARROW_ERRORS as exc:
                raise readers.damaged_parquet(path, done, exc) from exc
            names = [mapping.get(name, name) for name in batch.schema.names]
            yield pa.RecordBatch.from_arrays(batch.columns, names=names)
            done += batch.num_rows


def frame_batches(frame: Any, batch_rows: int = BATCH_ROWS) -> TickBatches:
    """A pyarrow Table, RecordBatch or RecordBatchReader, a pandas or a Polars DataFrame,
    as record batches of its tick columns (others are ignored, as in a file)."""
    library = type(frame).__module__.partition(".")[0]
    if library == "pandas":
        frame = pa.Table.from_pandas(frame, preserve_index=False)
    elif library == "polars":
        frame = frame.to_arrow()
    if isinstance(frame, pa.RecordBatch):
        frame = pa.Table.from_batches([frame])
    name = f"<{type(frame).__name__}>"
    readers.check_header(name, list(frame.schema.names), {})
    if isinstance(frame, pa.RecordBatchReader):
        return TickBatches(_known(frame), name)
    if not isinstance(frame, pa.Table):
        raise ValidationError(f"cannot ingest a {type(frame).__name__}")
    return TickBatches(_known(frame.to_batches(max_chunksize=batch_rows)), name)


def _known(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        keep = [i for i, name in enumerate(batch.schema.names) if name in KNOWN_COLUMNS]
        yield batch.select(keep)
