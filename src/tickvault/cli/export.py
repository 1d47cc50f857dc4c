"""``tickvault export``: an instrument's ticks in a time range to a Parquet or Arrow file."""

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tickvault.cli._common import DatabaseUrl, console, file_progress, friendly_errors, opened
from tickvault.errors import ValidationError
from tickvault.repositories.market_data import BATCH_ROWS
from tickvault.services.export import export_range
from tickvault.services.validation import ZONE_AT_END


def parse_instant(text: str, option: str) -> datetime:
    """``2024-05-06T13:30:00Z`` → an aware datetime in UTC; a clear error for a time
    without a zone or one that is not ISO 8601."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"{option} {text!r} is not an ISO 8601 date and time (2024-05-06T13:30:00Z)"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValidationError(f"{option} {text!r} has no time zone: add Z or an offset (+02:00)")
    if not ZONE_AT_END.search(text.strip()):  # as ticks' timestamps: no offset with seconds
        raise ValidationError(
            f"{option} {text!r} is not an ISO 8601 date and time (its zone is not Z or "
            "±hh:mm at the end)"
        )
    return when.astimezone(UTC)


def export(
    file: Annotated[
        Path,
        typer.Argument(
            help="The file to write: .parquet, or .arrow (Arrow IPC file, Feather v2).",
            show_default=False,
        ),
    ],
    instrument: Annotated[
        str, typer.Option(help="The instrument's symbol or id.", show_default=False)
    ],
    start: Annotated[
        str, typer.Option(help="From (inclusive), ISO 8601 with a zone.", show_default=False)
    ],
    end: Annotated[
        str, typer.Option(help="To (exclusive), ISO 8601 with a zone.", show_default=False)
    ],
    batch_rows: Annotated[
        int, typer.Option(help="Rows read from the database and written at a time.", min=1)
    ] = BATCH_ROWS,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the ticks of an instrument with START <= timestamp < END to FILE, in time
    order (soft-deleted ticks left out), with a progress bar.

    Columns: id, instrument_id, timestamp (UTC, microseconds), price, bid, ask, open_price,
    high_price, low_price (4 decimals, as the API gives them), volume, deleted_at. The file
    appears once complete (written as FILE.partial, then renamed).
    """
    since, until = parse_instant(start, "--start"), parse_instant(end, "--end")
    out = console()

    async def run() -> tuple[int, float]:
        async with opened(database_url, writes=False) as (_, session_factory):
            with file_progress(out) as progress:
                task = progress.add_task(file.name, total=None)
                started = time.perf_counter()
                report = await export_range(
                    session_factory,
                    instrument,
                    since,
                    until,
                    file,
                    batch_rows=batch_rows,
                    on_total=lambda total: progress.update(task, total=total),
                    on_rows=lambda rows: progress.advance(task, rows),
                )
            return report.rows, time.perf_counter() - started

    rows, elapsed = asyncio.run(run())
    out.print(
        f"exported {rows:,} ticks of {instrument} to {file} in {elapsed:.1f} s "
        f"({rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(export))
