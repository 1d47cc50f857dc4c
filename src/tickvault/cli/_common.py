"""What every command shares: the database URL option, one-line errors, logging, engines."""

import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.engine import check_writable, create_engine, create_session_factory
from tickvault.database.failures import DRIVER_ERRORS, reason_of, translated
from tickvault.database.url import display_url, to_async_url
from tickvault.errors import (
    ConfigurationError,
    ConfirmationRequired,
    DatabaseError,
    TickvaultError,
)
from tickvault.services import schema
from tickvault.settings import get_settings

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


def console() -> Console:
    """Stdout as it is now (a test runner swaps it per invocation)."""
    return Console(highlight=False, soft_wrap=True)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print a tickvault error, or a driver or file error no layer translated, as one line
    on stderr and exit 1, without a traceback.

    ``ConfirmationRequired`` says how to go ahead: every command that raises it takes --yes.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()
        try:
            return func(*args, **kwargs)
        except ConfirmationRequired as exc:
            message = f"{exc}; run again with --yes to go ahead"
        except TickvaultError as exc:
            message = str(exc)
        except DRIVER_ERRORS as exc:  # OSError included: a rejects file it may not write
            message = reason_of(exc)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=1)

    return wrapper


def resolve_url(database_url: str | None) -> str:
    return database_url or get_settings().database_url


@asynccontextmanager
async def opened(
    database_url: str | None, *, migrated: bool = True, writes: bool = True
) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    """An engine and a session factory for one command, disposed of at the end.

    Checked first: the database exists (a SQLite file is never created here: that is
    `tickvault db upgrade`'s job), answers, is at the code's revision (``migrated``) and
    takes writes (``writes``). Driver errors, then and in the block, come out as one-line
    ``DatabaseError``s naming the database.
    """
    url = to_async_url(resolve_url(database_url))
    require_database_file(url)
    engine = create_engine(url)
    try:
        with translated(url):
            if migrated:
                await require_head(engine)
            if writes:
                await check_writable(engine)
            yield engine, create_session_factory(engine)
    finally:
        await engine.dispose()


def require_database_file(url: URL) -> None:
    """Refuse a SQLite URL whose file is missing (connecting would create it, empty)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = str(url.database)
    if url.query.get("uri") == "true" and path.startswith("file:"):
        path = urllib.parse.unquote(path.removeprefix("file:").partition("?")[0])
    if not Path(path).is_file():
        raise DatabaseError(
            f"database file {path} does not exist: create it with `tickvault db upgrade`"
        )


async def require_head(engine: AsyncEngine) -> None:
    """Refuse a database the code does not match (or that holds no tickvault schema)."""
    revision, head = await schema.read_revision(engine), schema.head_revision()
    if revision == head:
        return
    where = display_url(engine.url)
    if revision is None:
        raise ConfigurationError(
            f"{where} holds no tickvault schema: run `tickvault db upgrade` first"
        )
    if revision not in {rev.id for rev in schema.history()}:
        raise ConfigurationError(
            f"{where} is at revision {revision}, which this tickvault does not know "
            f"(its head is {head}): a newer tickvault's database?"
        )
    raise ConfigurationError(
        f"{where} is at revision {revision}, the code at {head}: run `tickvault db upgrade` first"
    )


class _QuietAlembic(logging.Filter):
    """Drop Alembic's per-connection chatter; keep what each step does."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Context impl", "Will assume"))


class _EchoHandler(logging.Handler):
    """Log lines to whatever stderr is now (a test runner swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def configure_logging() -> None:
    handler = _EchoHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_QuietAlembic())
    for name in ("alembic", "tickvault"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def file_progress(out: Console) -> Progress:
    """The progress bar of a command working through a file (ingest, export)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
    )
