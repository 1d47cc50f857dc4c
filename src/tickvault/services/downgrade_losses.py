"""What a downgrade would destroy: the tables and columns it drops, with the rows they hold.

::

    target, dropped = rehearse(alembic_config(SCRATCH_URL), "c2f8d4b6e913", "-1")
    count_rows(url, dropped)   # [Loss("write_receipts", None, rows=12)]

``rehearse`` runs the downgrade on an empty in-memory SQLite database (up to the live
database's revision, then down to the target) and compares tables and columns before and
after. It runs the revision modules themselves, so a revision added later needs no list kept
beside it; both engines run the same revisions, with the same names. Compared end to end, a
column that one downgrade step drops and an older step adds back (empty) would not be seen.
``schema.downgrade`` uses both before it changes anything.
"""

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import URL, Connection

from tickvault.database.engine import create_engine

SCRATCH_URL = "sqlite+aiosqlite://"  # in memory: gone with its one connection
_VERSION_TABLE = "alembic_version"

Shape = dict[str, list[str]]  # table -> its columns


@dataclass(frozen=True)
class Loss:
    """A table (``column`` None) or a column that a downgrade drops, and the rows that hold
    data in it: every row of a table, the rows whose value in a column is not NULL."""

    table: str
    column: str | None
    rows: int = 0

    def __str__(self) -> str:
        rows = f"{self.rows:,} row{'' if self.rows == 1 else 's'}"
        if self.column is None:
            return f"table {self.table} ({rows})"
        return f"column {self.table}.{self.column} ({rows} with a value)"


def rehearse(scratch: Config, current: str, revision: str) -> tuple[str | None, list[Loss]]:
    """The revision that ``revision`` names from ``current`` (None: base), and what
    downgrading there drops (rows not counted yet). ``scratch``: an Alembic config whose
    ``url`` attribute is ``SCRATCH_URL``. Raises Alembic's errors for a bad target."""

    def run_on(connection: Connection) -> tuple[str | None, Shape, Shape]:
        scratch.attributes["connection"] = connection
        command.upgrade(scratch, current)
        before = _shape(connection)
        command.downgrade(scratch, revision)
        after = _shape(connection)
        return MigrationContext.configure(connection).get_current_revision(), before, after

    async def run() -> tuple[str | None, Shape, Shape]:
        engine = create_engine(SCRATCH_URL)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run_on)
        finally:
            await engine.dispose()

    with _quiet("alembic", "tickvault.migrations"):
        target, before, after = asyncio.run(run())
    dropped = [Loss(table, None) for table in before if table not in after]
    dropped += [
        Loss(table, column)
        for table, columns in before.items()
        if table in after
        for column in columns
        if column not in after[table]
    ]
    return target, dropped


def count_rows(url: URL, dropped: list[Loss]) -> list[Loss]:
    """``dropped`` with the rows each holds in the database at ``url``."""

    def count(connection: Connection, loss: Loss) -> int:
        query = sa.select(sa.func.count()).select_from(sa.table(loss.table))
        if loss.column is not None:
            query = query.where(sa.column(loss.column).is_not(None))
        return int(connection.execute(query).scalar_one())

    async def run() -> list[Loss]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return [
                    replace(loss, rows=await connection.run_sync(count, loss)) for loss in dropped
                ]
        finally:
            await engine.dispose()

    return asyncio.run(run()) if dropped else []


def _shape(connection: Connection) -> Shape:
    inspector = sa.inspect(connection)
    shape = {
        table: [column["name"] for column in inspector.get_columns(table)]
        for table in inspector.get_table_names()
        if table != _VERSION_TABLE
    }
    connection.rollback()  # inspecting began a transaction; the next migration begins its own
    return shape


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """These loggers say nothing below ERROR for a while: a rehearsal's steps are not news."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
