"""``tickvault db``: migrate the schema (upgrade, downgrade, current, history)."""

from typing import Annotated

import typer

from tickvault.cli._common import DatabaseUrl, friendly_errors
from tickvault.services import schema

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
