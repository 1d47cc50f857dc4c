"""``tickvault ingest FILE`` and ``tickvault purge``: bulk loads and the purge of old
soft-deleted rows."""

import asyncio
import csv
import io
import re
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import (
    Progress,
)

from tickvault.cli._common import DatabaseUrl, console, file_progress, friendly_errors, opened
from tickvault.database.receipts import LoadReceipt, file_fingerprint
from tickvault.errors import TickvaultError, ValidationError
from tickvault.services.market_data import (
    BatchFailure,
    IngestReport,
    MarketDataService,
    Rejection,
)
from tickvault.services.purge import purge_soft_deleted
from tickvault.services.readers import KNOWN_COLUMNS, TickBatches, open_ticks

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
    opened on the first rejection only.

    Every line is flushed as it is written, before any later batch commits: a run killed at
    any point leaves a line for each refused row its committed batches passed. A resumed
    load keeps the lines of the rows before its starting point (``resume``) and adds its
    own, so the file holds each refused row once.
    """

    HEADER = ("position", "reason", *KNOWN_COLUMNS)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._handle: IO[str] | None = None
        self._writer: Any = None

    def resume(self, before: int) -> None:
        """Keep the earlier run's lines for positions below ``before``; drop the rest."""
        if before == 0 or not self.path.exists():
            self.path.unlink(missing_ok=True)
            return
        content = self.path.read_text(encoding="utf-8")
        records = list(csv.reader(io.StringIO(content, newline="")))
        if records and not content.endswith("\n"):
            records.pop()  # a line cut short when that run was killed
        kept = [r for r in records[1:] if r and r[0].isdigit() and int(r[0]) < before]
        self.path.unlink()
        for record in kept:
            self._write(record)

    def _write(self, record: list[Any]) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(self.HEADER)
        self._writer.writerow(record)
        assert self._handle is not None
        self._handle.flush()
        self.rows += 1

    def add(self, rejection: Rejection, row: Mapping[str, Any]) -> None:
        values = [row.get(name, "") for name in KNOWN_COLUMNS]
        self._write([rejection.position, rejection.reason, *values])

    def add_failed_batch(self, failure: BatchFailure) -> None:
        self._write(
            [
                failure.first_position,
                f"positions {failure.first_position}-{failure.last_position}: "
                f"batch refused by the database: {failure.reason}",
            ]
        )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _counted(source: TickBatches, progress: Progress, task: Any) -> TickBatches:
    def batches() -> Iterator[Any]:
        done = 0
        for batch in source:
            yield batch
            done += len(batch) if isinstance(batch, list) else batch.num_rows
            progress.update(task, completed=done)

    return TickBatches(batches(), source.name)


def ingest(
    file: Annotated[
        Path, typer.Argument(help="A .csv (with a header) or .parquet file.", show_default=False)
    ],
    batch_size: Annotated[int, typer.Option(help="Rows per database batch.", min=1)] = 10_000,
    column: Annotated[
        list[str] | None,
        typer.Option(help="Map a file column to a tick field: --column ts=timestamp."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Load the file again even if it was loaded before."),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Load ticks from FILE; refused rows go to FILE.rejects.csv beside it.

    Each batch commits with a receipt of the file's content (sha256): run again after an
    interruption, the load continues after the last committed row; a file already loaded
    is not stored again (--force loads it again).

    Exit status: 0 when every row was stored (or the file was already loaded), 2 when some
    were refused, 1 on an error.
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
    rows = open_ticks(file, columns=mapping)
    rejects = RejectsFile(file.with_name(file.name + ".rejects.csv"))
    out = console()
    started = time.perf_counter()
    report = IngestReport()
    fingerprint = file_fingerprint(file)

    async def run() -> None:
        async with opened(database_url) as (_, session_factory):
            service = MarketDataService(session_factory)
            with file_progress(out) as progress:
                task = progress.add_task(file.name, total=count_rows(file))

                def resume_from(receipt: LoadReceipt) -> None:
                    # Before any row is read: how far an earlier run got.
                    if receipt.done:
                        return
                    rejects.resume(before=receipt.rows_consumed)
                    if receipt.rows_consumed:
                        out.print(
                            f"resuming {file} after row {receipt.rows_consumed:,} "
                            f"(an earlier run stored {receipt.rows_stored:,} rows)"
                        )

                await service.ingest(
                    _counted(rows, progress, task),
                    batch_size=batch_size,
                    on_reject=rejects.add,
                    on_failed_batch=rejects.add_failed_batch,
                    source_key=fingerprint,
                    source_name=str(file),
                    fingerprint=fingerprint,
                    force=force,
                    report=report,  # what was stored, should the load stop
                    on_receipt=resume_from,
                )

    try:
        asyncio.run(run())
    except (TickvaultError, KeyboardInterrupt):
        if report.accepted:
            typer.echo(
                f"stopped: {report.accepted:,} rows of {file} were stored by this run; "
                "run the same command again to continue after them",
                err=True,
            )
        raise
    finally:
        rejects.close()
    if report.already_loaded and report.receipt is not None:
        when = report.receipt.updated_at
        out.print(
            f"{file} was already loaded ({report.receipt.rows_stored:,} rows stored"
            + (f", finished {when:%Y-%m-%d %H:%M} UTC" if when else "")
            + "): nothing stored; --force loads it again"
        )
        return
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
    if rejects.rows:
        out.print(f"{rejects.rows:,} rows refused: see {rejects.path}")
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
    confirm_above: Annotated[
        int, typer.Option(help="Ask for --yes when more rows than this would go.", min=0)
    ] = 10_000,
    yes: Annotated[
        bool, typer.Option("--yes", help="Go ahead however many rows would go.")
    ] = False,
    keep_partitions: Annotated[
        bool,
        typer.Option(
            "--keep-partitions", help="PostgreSQL: drop no partition, only soft-deleted rows."
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Hard-delete rows soft-deleted before now - OLDER_THAN (the only hard delete); more
    than --confirm-above rows: says how many per table, deletes nothing unless given --yes.

    On a partitioned market_data (PostgreSQL), also drop every partition whose whole time
    range is older than the cutoff, live ticks included (its rows count towards
    --confirm-above; --dry-run lists them)."""
    age = parse_duration(older_than)

    async def run() -> None:
        async with opened(database_url, writes=not dry_run) as (_, session_factory):
            report = await purge_soft_deleted(
                session_factory,
                older_than=age,
                dry_run=dry_run,
                batch_size=batch_size,
                confirm_above=None if yes else confirm_above,
                drop_partitions=not keep_partitions,
            )
        verb = "would delete" if dry_run else "deleted"
        out = console()
        if report.dropped:
            rows = sum(p.rows for p in report.dropped)
            about = "about " if any(p.estimated for p in report.dropped) else ""
            before = report.cutoff.isoformat(timespec="seconds")
            out.print(
                f"market_data partitions wholly before {before}: "
                f"{'would drop' if dry_run else 'dropped'} {len(report.dropped)} "
                f"({about}{rows:,} rows)"
            )
            for partition in report.dropped:
                span = ""
                if partition.lower is not None and partition.upper is not None:
                    span = f" [{partition.lower:%Y-%m-%d} .. {partition.upper:%Y-%m-%d})"
                about = "about " if partition.estimated else ""
                out.print(f"  {partition.name}{span}: {about}{partition.rows:,} rows")
        out.print(f"soft-deleted before {report.cutoff.isoformat(timespec='seconds')}:")
        for table, count in report.deleted.items():
            if table != "write_receipts":
                out.print(f"  {table}: {verb} {count:,}")
        if report.keys_cutoff is not None:
            keys = report.deleted.get("write_receipts", 0)
            out.print(
                f"idempotency keys used before {report.keys_cutoff.isoformat(timespec='seconds')}"
                f": {verb} {keys:,}"
            )
        dropped_rows = sum(p.rows for p in report.dropped)
        if dry_run and sum(report.deleted.values()) + dropped_rows > confirm_above:
            out.print(f"more than {confirm_above:,} rows: the purge will need --yes")

    asyncio.run(run())


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(ingest))
    app.command()(friendly_errors(purge))
