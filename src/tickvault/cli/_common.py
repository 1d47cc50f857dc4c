"""What every command shares: the database URL option, one-line errors, logging, engines."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tickvault.database.engine import create_engine, create_session_factory
from tickvault.errors import TickvaultError
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
    """Print a tickvault error as one line on stderr and exit 1, without a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()
        try:
            return func(*args, **kwargs)
        except TickvaultError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None

    return wrapper


def resolve_url(database_url: str | None) -> str:
    return database_url or get_settings().database_url


@asynccontextmanager
async def opened(
    database_url: str | None,
) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    """An engine and a session factory for one command, disposed of at the end."""
    engine = create_engine(resolve_url(database_url))
    try:
        yield engine, create_session_factory(engine)
    finally:
        await engine.dispose()


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
