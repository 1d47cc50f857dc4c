"""``tickvault ingest FILE`` and ``tickvault purge``: bulk loads and the purge of old
soft-deleted rows."""

import asyncio
import csv
import re
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from tickvault.cli._common import DatabaseUrl, console, friendly_errors, opened
from tickvault.errors import ValidationError
from tickvault.services.market_data import IngestReport, MarketDataService, Rejection
from tickvault.services.purge import purge_soft_deleted
from tickvault.services.readers import KNOWN_COLUMNS, read_ticks

EXIT_REJECTED = 2
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d`` → 30 days; s, m, h, d and w."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValidationError(
            f"duration {text!r} not understood: use a number and s, m, h, d or w (30d, 12h)"
        )
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValidationError(f"duration {text!r} is too long") from None


def count_rows(path: Path) -> int | None:
    """Rows in a tick file, for the progress bar (None when it cannot tell cheaply)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(lines - 1, 0)


class RejectsFile:
    """``<input>.rejects.csv``: each refused row with its position, reason and values;
    opened on the first rejection only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._handle: IO[str] | None = None
        self._writer: Any = None

    def add(self, rejection: Rejection, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["position", "reason", *KNOWN_COLUMNS])
        values = [row.get(name, "") for name in KNOWN_COLUMNS]
        self._writer.writerow([rejection.position, rejection.reason, *values])
        self.rows += 1

    def add_failed_batches(self, report: IngestReport) -> None:
        for failure in report.failed_batches:
            rejection = Rejection(
                failure.first_position,
                f"positions {failure.first_position}-{failure.last_position}: "
                f"batch refused by the database: {failure.reason}",
            )
            self.add(rejection, {})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _counted(
    rows: Iterator[dict[str, Any]], progress: Progress, task: Any
) -> Iterator[dict[str, Any]]:
    for n, row in enumerate(rows, 1):
        if n % 1000 == 0:
            progress.update(task, completed=n)
        yield row


def ingest(
    file: Annotated[
        Path, typer.Argument(help="A .csv (with a header) or .parquet file.", show_default=False)
    ],
    batch_size: Annotated[int, typer.Option(help="Rows per database batch.", min=1)] = 10_000,
    column: Annotated[
        list[str] | None,
        typer.Option(help="Map a file column to a tick field: --column ts=timestamp."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Load ticks from FILE; refused rows go to FILE.rejects.csv beside it.

    Exit status: 0 when every row was stored, 2 when some were refused, 1 on an error.
    """
    if not file.is_file():
        raise ValidationError(f"{file}: no such file")
    mapping = {}
    for item in column or []:
        source, _, target = item.partition("=")
        if not source or target not in KNOWN_COLUMNS:
            raise ValidationError(
                f"--column {item!r}: expected NAME=FIELD, FIELD one of {', '.join(KNOWN_COLUMNS)}"
            )
        mapping[source] = target
    rows = read_ticks(file, columns=mapping)
    rejects = RejectsFile(file.with_name(file.name + ".rejects.csv"))
    rejects.path.unlink(missing_ok=True)  # a previous run's rejects would mislead
    out = console()
    started = time.perf_counter()

    async def run() -> IngestReport:
        async with opened(database_url) as (_, session_factory):
            service = MarketDataService(session_factory)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                console=out,
                transient=True,
            ) as progress:
                task = progress.add_task(file.name, total=count_rows(file))
                return await service.ingest(
                    _counted(rows, progress, task), batch_size=batch_size, on_reject=rejects.add
                )

    try:
        report = asyncio.run(run())
        rejects.add_failed_batches(report)
    finally:
        rejects.close()
    elapsed = time.perf_counter() - started
    out.print(
        f"stored {report.accepted:,} of {report.rows_seen:,} rows from {file} in {elapsed:.1f} s "
        f"({report.accepted / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    if report.failed_batches:
        out.print(
            f"{len(report.failed_batches)} batches refused by the database "
            "(none of their rows stored)"
        )
    if report.rejected:
        out.print(f"{report.rejected:,} rows refused: see {rejects.path}")
        raise typer.Exit(EXIT_REJECTED)


def purge(
    older_than: Annotated[
        str,
        typer.Option(
            help="Purge rows soft-deleted longer ago than this: 30d, 12h, 2w …",
            show_default=False,
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    batch_size: Annotated[int, typer.Option(help="Rows deleted per transaction.", min=1)] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Hard-delete rows soft-deleted before now - OLDER_THAN (the only hard delete)."""
    age = parse_duration(older_than)

    async def run() -> None:
        async with opened(database_url) as (_, session_factory):
            report = await purge_soft_deleted(
                session_factory, older_than=age, dry_run=dry_run, batch_size=batch_size
            )
        verb = "would delete" if dry_run else "deleted"
        out = console()
        out.print(f"soft-deleted before {report.cutoff.isoformat(timespec='seconds')}:")
        for table, count in report.deleted.items():
            out.print(f"  {table}: {verb} {count:,}")

    asyncio.run(run())


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(ingest))
    app.command()(friendly_errors(purge))
