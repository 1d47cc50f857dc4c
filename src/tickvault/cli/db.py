"""``tickvault db``: migrate the schema (upgrade, downgrade, current, history) and
partition market_data on PostgreSQL (partition, unpartition)."""

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from tickvault.cli._common import DatabaseUrl, console, friendly_errors, opened
from tickvault.services import partitioning, schema
from tickvault.services.partitioning import ConversionReport

db_app = typer.Typer(help="Migrate the database schema.", no_args_is_help=True)


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision; with --sql also a range FROM:TO.")
    ] = "head",
    database_url: DatabaseUrl = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (offline).")
    ] = False,
) -> None:
    """Migrate the database up to REVISION (default: head); with --sql (PostgreSQL), print
    the SQL without connecting, from the base or, for a range FROM:TO, from FROM
    (`--sql f79e2702f75c:a7c3e9d15b42`: that one revision)."""
    if sql:
        typer.echo(schema.upgrade_sql(database_url, revision), nl=False)
        return
    now = schema.upgrade(database_url, revision)
    typer.echo(f"database at revision {now}")


@db_app.command("build-indexes")
@friendly_errors
def db_build_indexes(database_url: DatabaseUrl = None) -> None:
    """PostgreSQL: build the next revision's indexes CONCURRENTLY (writers go on); then
    run `tickvault db upgrade` to that revision, which keeps them."""
    builds = schema.build_indexes_concurrently(database_url)
    if not builds:
        typer.echo("nothing to build: the next revision creates no index")
    for build in builds:
        typer.echo(f"{build.name}: {'built' if build.built else 'already built'}")


# ignore_unknown_options lets "-1" through as a revision instead of an unknown flag.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
@friendly_errors
def db_downgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision: an id, -1, or base; with --sql FROM:TO.")
    ],
    database_url: DatabaseUrl = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Go ahead even if it drops tables or columns with rows.")
    ] = False,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (offline).")
    ] = False,
) -> None:
    """Migrate the database down to REVISION; one that would drop tables or columns holding
    rows says which, with their row counts, and changes nothing unless given --yes. With
    --sql (PostgreSQL), print the SQL of a range FROM:TO without connecting."""
    if sql:
        typer.echo(schema.downgrade_sql(database_url, revision), nl=False)
        return
    now = schema.downgrade(database_url, revision, allow_data_loss=yes)
    typer.echo(f"database at revision {now or 'base (empty)'}")


@db_app.command("current")
@friendly_errors
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the database's revision."""
    revision = schema.current_revision(database_url)
    head = schema.head_revision()
    if revision is None:
        typer.echo("none (empty database; run `tickvault db upgrade`)")
    else:
        typer.echo(f"{revision}{' (head)' if revision == head else ''}")


@db_app.command("history")
@friendly_errors
def db_history() -> None:
    """List the revision chain, oldest first."""
    head = schema.head_revision()
    for rev in schema.history():
        marker = " (head)" if rev.id == head else ""
        typer.echo(f"{rev.down_revision or '<base>'} -> {rev.id}{marker}: {rev.title}")


BatchSize = Annotated[int, typer.Option(help="Rows copied per transaction.", min=1)]


@db_app.command("partition")
@friendly_errors
def db_partition(
    interval: Annotated[
        str, typer.Option(help="One partition per: 1d (UTC day), 1w (ISO week) or 1mo.")
    ],
    ahead: Annotated[int, typer.Option(help="Partitions created past now.", min=1)] = 4,
    batch_size: BatchSize = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """PostgreSQL: convert market_data to time partitions while it is written to (rows
    copied in batches, then a short swap); on a partitioned table, create the partitions
    missing up to --ahead periods past now (run it daily)."""

    async def run() -> ConversionReport:
        async with opened(database_url) as (engine, _):
            with _CopyProgress() as progress:
                return await partitioning.partition(
                    engine, interval, ahead=ahead, batch_size=batch_size, on_progress=progress
                )

    report = asyncio.run(run())
    out = console()
    if report.leftovers_removed:
        out.print("removed what an interrupted conversion had left")
    if report.converted:
        out.print(
            f"market_data partitioned by {interval}: {report.rows_moved:,} rows copied, "
            f"{len(report.partitions)} partitions ({report.partitions[0]} … "
            f"{report.partitions[-1]})"
        )
        return
    created = ", ".join(report.partitions) or "none missing"
    out.print(f"market_data already partitioned by {interval}; partitions created: {created}")
    if report.default_rows:
        out.print(
            f"warning: {report.default_rows:,} rows in market_data_default (no partition "
            "covers their time): raise --ahead, or they stay there"
        )


@db_app.command("unpartition")
@friendly_errors
def db_unpartition(batch_size: BatchSize = 10_000, database_url: DatabaseUrl = None) -> None:
    """PostgreSQL: convert a partitioned market_data back to one table, the same way."""

    async def run() -> ConversionReport:
        async with opened(database_url, migrated=False) as (engine, _):
            with _CopyProgress() as progress:
                return await partitioning.unpartition(
                    engine, batch_size=batch_size, on_progress=progress
                )

    report = asyncio.run(run())
    out = console()
    if report.leftovers_removed:
        out.print("removed what an interrupted conversion had left")
    out.print(f"market_data is one table again: {report.rows_moved:,} rows copied")


class _CopyProgress:
    """A progress bar of rows copied, on stderr, shown from the first batch on and gone
    once done (a command that copies nothing prints nothing)."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("[bold]copying market_data"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True, highlight=False),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("copy", total=total)
        assert self.task is not None
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self) -> "_CopyProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
