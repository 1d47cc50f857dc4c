"""The ``tickvault`` command line: a thin shell over ``tickvault.services``.

    tickvault db upgrade [REV]       migrate up (default: head)
    tickvault db downgrade REV       migrate down (an id, -1, or base)
    tickvault db current             the database's revision
    tickvault db history             the revision chain

Every command reads ``TICKVAULT_DATABASE_URL`` and takes ``--database-url``.
"""

import logging
from collections.abc import Callable
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

import typer

from tickvault.errors import TickvaultError
from tickvault.services import schema

app = typer.Typer(
    help="tickvault: market data and alert logs on SQLite and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Migrate the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TICKVAULT_DATABASE_URL",
        help="Database URL (sqlite:///file.db or postgresql://user@host/db).",
        show_default=False,
    ),
]

P = ParamSpec("P")
R = TypeVar("R")


def _friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print a tickvault error as one line on stderr and exit 1, without a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _configure_logging()
        try:
            return func(*args, **kwargs)
        except TickvaultError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None

    return wrapper


class _QuietAlembic(logging.Filter):
    """Drop Alembic's per-connection chatter; keep what each step does."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Context impl", "Will assume"))


class _EchoHandler(logging.Handler):
    """Log lines to whatever stderr is now (a test runner swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def _configure_logging() -> None:
    handler = _EchoHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_QuietAlembic())
    for name in ("alembic", "tickvault"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@db_app.command("upgrade")
@_friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (offline).")
    ] = False,
) -> None:
    """Migrate the database up to REVISION (default: head)."""
    if sql:
        typer.echo(schema.upgrade_sql(database_url, revision), nl=False)
        return
    now = schema.upgrade(database_url, revision)
    typer.echo(f"database at revision {now}")


# ignore_unknown_options lets "-1" through as a revision instead of an unknown flag.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
@_friendly_errors
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision: an id, -1, or base.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Migrate the database down to REVISION."""
    now = schema.downgrade(database_url, revision)
    typer.echo(f"database at revision {now or 'base (empty)'}")


@db_app.command("current")
@_friendly_errors
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the database's revision."""
    revision = schema.current_revision(database_url)
    head = schema.head_revision()
    if revision is None:
        typer.echo("none (empty database; run `tickvault db upgrade`)")
    else:
        typer.echo(f"{revision}{' (head)' if revision == head else ''}")


@db_app.command("history")
@_friendly_errors
def db_history() -> None:
    """List the revision chain, oldest first."""
    head = schema.head_revision()
    for rev in schema.history():
        marker = " (head)" if rev.id == head else ""
        typer.echo(f"{rev.down_revision or '<base>'} -> {rev.id}{marker}: {rev.title}")


def main() -> None:
    app()
