"""Schema migrations as plain functions: upgrade, downgrade, current revision, history.

The CLI (``tickvault db …``) is a thin shell over these; ``alembic`` from the repository
root runs the same environment. Each function takes a database URL (``None`` reads
``TICKVAULT_DATABASE_URL``) and raises ``TickvaultError`` subclasses with one-line messages.

``downgrade`` asks first: one that would drop a table or column holding rows raises
``ConfirmationRequired``, saying what with row counts, unless ``allow_data_loss=True``.

``upgrade`` and ``downgrade`` run their own event loop: call them from synchronous code
(or a worker thread), not from inside a running loop.
"""

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.database.engine import create_engine
from tickvault.database.partitions import is_partitioned
from tickvault.database.url import display_url, to_async_url
from tickvault.errors import (
    ConfirmationRequired,
    DatabaseError,
    MigrationError,
    NotATickvaultDatabase,
)
from tickvault.migrations.online import ONLINE_INDEXES, build_concurrently
from tickvault.services.downgrade_losses import SCRATCH_URL, count_rows, rehearse
from tickvault.settings import get_settings

SCRIPT_LOCATION = "tickvault:migrations"
VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Revision:
    """One revision of the chain, oldest first in ``history()``."""

    id: str
    down_revision: str | None
    title: str


def alembic_config(
    url: str | URL | None = None, *, sql_output: io.StringIO | None = None
) -> Config:
    """An Alembic ``Config`` for tickvault's migrations, without an ini file.

    ``sql_output`` collects the SQL of an offline (``--sql``) run.
    """
    config = Config(output_buffer=sql_output) if sql_output is not None else Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["url"] = str(_resolve(url).render_as_string(hide_password=False))
    config.attributes["configure_logger"] = False
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def history() -> list[Revision]:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [
        Revision(
            id=rev.revision,
            down_revision=rev.down_revision if isinstance(rev.down_revision, str) else None,
            title=(rev.doc or "").splitlines()[0] if rev.doc else "",
        )
        for rev in script.walk_revisions()
    ]
    return list(reversed(revisions))


def upgrade(url: str | URL | None = None, revision: str = "head") -> str | None:
    """Migrate the database up to ``revision``; returns the revision it is now at."""
    resolved = _resolve(url)
    if ":" in revision:
        raise MigrationError(
            f"a range ({revision}) is for offline SQL (--sql): online, an upgrade starts "
            "from the database's own revision; give the target alone"
        )
    _check_revision(revision)
    asyncio.run(_inspect(resolved))
    with _translated(resolved):
        command.upgrade(alembic_config(resolved), revision)
    return current_revision(resolved)


def downgrade(
    url: str | URL | None = None, revision: str = "-1", *, allow_data_loss: bool = False
) -> str | None:
    """Migrate the database down to ``revision`` (an id, ``-1`` or ``base``).

    First, unless ``allow_data_loss``: if the downgrade would drop a table that holds rows
    or a column that holds values, raises ``ConfirmationRequired`` naming every table and
    column it drops with their row counts, and changes nothing.
    """
    resolved = _resolve(url)
    _require_existing_file(resolved)
    _check_revision(revision)
    current = asyncio.run(_inspect(resolved))
    if current is None:
        raise MigrationError(f"{display_url(resolved)} has no tickvault revision to downgrade")
    if not allow_data_loss:
        with _translated(resolved):
            target, dropped = rehearse(alembic_config(SCRATCH_URL), current, revision)
            losses = count_rows(resolved, dropped)
        if any(loss.rows for loss in losses):
            raise ConfirmationRequired(
                f"downgrade from {current} to {target or 'base'} would drop "
                f"{', '.join(map(str, losses))}; nothing was changed"
            )
    with _translated(resolved):
        command.downgrade(alembic_config(resolved), revision)
    return current_revision(resolved)


def upgrade_sql(url: str | URL | None, revision: str = "head", *, start: str | None = None) -> str:
    """The DDL of an upgrade, as SQL text, without connecting (Alembic's offline mode).

    Offline, the database is not read, so the SQL starts from the base unless told where
    the database is: ``start``, or a range as ``revision`` (Alembic's ``FROM:TO``), e.g.
    ``upgrade_sql(url, "f79e2702f75c:a7c3e9d15b42")`` for that one revision's DDL.
    """
    if ":" in revision:
        if start is not None:
            raise MigrationError(f"give the start once: start={start!r} and {revision!r}")
        start, revision = revision.split(":", 1)
    if start is not None:
        _check_revision(start)
    _check_revision(revision)
    return _offline_sql(url, "upgrade", f"{start}:{revision}" if start else revision)


def downgrade_sql(url: str | URL | None, revisions: str) -> str:
    """The SQL of a downgrade ``FROM:TO`` (Alembic's offline range), without connecting.

    Offline, the database is not read, so it says where it starts: ``FROM`` (an id or
    ``head``). What a downgrade checks online it checks in the SQL: the DECIMAL(12,4)
    downgrade of ``4a24cf1de90a`` stops the script (RAISE EXCEPTION, the transaction rolled
    back) when a value does not fit.
    """
    start, sep, target = revisions.partition(":")
    if not sep:
        raise MigrationError(
            f"an offline downgrade needs FROM:TO (got {revisions!r}): the SQL cannot read "
            "the database's revision, e.g. c2f8d4b6e913:a7c3e9d15b42"
        )
    _check_revision(start)
    _check_revision(target)
    return _offline_sql(url, "downgrade", revisions)


def _offline_sql(url: str | URL | None, direction: str, target: str) -> str:
    resolved = _resolve(url)
    if resolved.get_backend_name() == "sqlite":
        raise MigrationError(
            "offline SQL (--sql) is for PostgreSQL: SQLite migrations recreate tables "
            "and need the live database; run `tickvault db upgrade` against it instead"
        )
    buffer = io.StringIO()
    run = command.upgrade if direction == "upgrade" else command.downgrade
    with _translated(resolved):
        run(alembic_config(resolved, sql_output=buffer), target, sql=True)
    sql = buffer.getvalue()
    # Alembic writes an empty script for a range that runs the other way.
    if f"-- Running {direction} " not in sql:
        order = "older to newer" if direction == "upgrade" else "newer to older"
        raise MigrationError(
            f"{target} runs no revision: an {direction} range goes from {order} "
            "(see `tickvault db history`)"
        )
    return sql


@dataclass(frozen=True)
class IndexBuild:
    """One index of the next revision, built CONCURRENTLY now or found already built."""

    name: str
    built: bool


def build_indexes_concurrently(
    url: str | URL | None = None, *, lock_timeout_ms: int | None = None
) -> list[IndexBuild]:
    """PostgreSQL: build the indexes of the next revision without blocking writers.

    Runs ``CREATE INDEX CONCURRENTLY`` for each index the revision after the database's
    current one creates (see ``tickvault.migrations.online``), outside any transaction and
    with the migration lock timeout; ``upgrade`` then finds them built and keeps them. An
    empty list when that revision creates none. Run it, then ``upgrade`` one revision.
    """
    resolved = _resolve(url)
    if resolved.get_backend_name() != "postgresql":
        raise MigrationError(
            "building indexes CONCURRENTLY is for PostgreSQL: on SQLite a migration holds the "
            "database's write lock whatever it does; run `tickvault db upgrade`"
        )
    current = asyncio.run(_inspect(resolved))
    following = [rev.id for rev in history() if rev.down_revision == current]
    if current is None or not following:
        return []
    indexes = ONLINE_INDEXES.get(following[0], ())
    timeout = (
        get_settings().migration_lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    )

    async def build() -> list[IndexBuild]:
        engine = create_engine(resolved)
        try:
            async with engine.connect() as connection:
                # CONCURRENTLY cannot run inside a transaction block.
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.exec_driver_sql(f"SET lock_timeout = '{int(timeout)}ms'")
                for table in sorted({index.table for index in indexes}):
                    if await is_partitioned(connection, table):
                        raise MigrationError(
                            f"{table} is partitioned, and PostgreSQL cannot CREATE INDEX "
                            "CONCURRENTLY on a partitioned table; `tickvault db upgrade` "
                            "builds the indexes the ordinary way (writes wait for the build)"
                        )
                return [
                    IndexBuild(index.name, await connection.run_sync(build_concurrently, index))
                    for index in indexes
                ]
        finally:
            await engine.dispose()

    with _translated(resolved):
        return asyncio.run(build())


def current_revision(url: str | URL | None = None) -> str | None:
    """The database's revision, or ``None`` for an empty database."""
    resolved = _resolve(url)
    _require_existing_file(resolved)
    return asyncio.run(_inspect(resolved))


async def read_revision(engine: AsyncEngine) -> str | None:
    """The revision of the database behind ``engine``, from inside a running loop."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revision_of)


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _resolve(url: str | URL | None) -> URL:
    return to_async_url(url if url is not None else get_settings().database_url)


def _require_existing_file(url: URL) -> None:
    is_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if is_file and not Path(str(url.database)).exists():
        raise DatabaseError(f"database file {url.database} does not exist")


def _check_revision(revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    if revision in ("head", "heads", "base") or revision.lstrip("+-").isdigit():
        return
    try:
        found = script.get_revision(revision)
    except CommandError as exc:
        raise MigrationError(f"unknown revision {revision!r}: {exc}") from exc
    except Exception as exc:  # alembic raises several resolution errors
        raise MigrationError(f"unknown revision {revision!r}") from exc
    if found is None:
        raise MigrationError(f"unknown revision {revision!r}")


async def _inspect(url: URL) -> str | None:
    """The database's revision; refuses a database that holds someone else's schema."""
    engine = create_engine(url)
    try:
        with _translated(url):
            async with engine.connect() as connection:
                tables, revision = await connection.run_sync(_tables_and_revision)
    finally:
        await engine.dispose()
    known = {rev.id for rev in history()}
    if revision is None and tables:
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise NotATickvaultDatabase(
            f"{display_url(url)} has tables ({shown}) but no tickvault revision: "
            "not a tickvault database"
        )
    if revision is not None and revision not in known:
        raise NotATickvaultDatabase(
            f"{display_url(url)} is at revision {revision!r}, which is not one of "
            "tickvault's: not a tickvault database, or one from a newer tickvault"
        )
    return revision


def _tables_and_revision(connection: Connection) -> tuple[list[str], str | None]:
    tables = inspect(connection).get_table_names()
    if VERSION_TABLE not in tables:
        return tables, None
    others = [name for name in tables if name != VERSION_TABLE]
    return others, _revision_of(connection)


@contextmanager
def _translated(url: URL) -> Iterator[None]:
    """Turn driver and Alembic errors into one-line tickvault errors."""
    try:
        yield
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"database error at {display_url(url)}: {reason}") from exc
    except OSError as exc:
        raise DatabaseError(f"cannot reach the database at {display_url(url)}: {exc}") from exc
