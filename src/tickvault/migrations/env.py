"""Alembic environment: runs tickvault's revisions on SQLite and PostgreSQL.

The URL comes from, in order: a connection or engine handed in through
``config.attributes["connection"]`` (tests, the CLI), ``-x url=...``,
``config.attributes["url"]``, then ``TICKVAULT_DATABASE_URL``.

SQLite: batch mode recreates tables, so foreign keys are switched off outside the
transaction (a DROP TABLE with them on would cascade into the child tables) and
``PRAGMA foreign_key_check`` must come back clean before the commit.
PostgreSQL: a ``lock_timeout`` makes a migration stuck behind a busy table fail fast.
"""

import asyncio
from contextlib import nullcontext
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import tickvault.models  # noqa: F401  (registers the models on Base.metadata)
from tickvault.database.base import Base
from tickvault.database.engine import create_engine
from tickvault.database.partitions import is_partition_name
from tickvault.database.url import to_async_url
from tickvault.migrations._helpers import (
    check_foreign_keys,
    set_sqlite_foreign_keys,
)
from tickvault.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.attributes.get("url")
    return str(url) if url else get_settings().database_url


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # market_data's partitions (`tickvault db partition`) are not in the models: leave them
    # out of autogenerate's comparison, which would otherwise drop them.
    return not (type_ == "table" and name is not None and is_partition_name(name))


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        include_name=_include_name,
        compare_type=True,
        compare_server_default=False,
        process_revision_directives=config.attributes.get("process_revision_directives"),
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    url = to_async_url(_database_url())
    is_sqlite = url.get_backend_name() == "sqlite"
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=is_sqlite,
    )
    with context.begin_transaction():
        if url.get_backend_name() == "postgresql":
            context.execute(_lock_timeout_sql())
        context.run_migrations()


def _lock_timeout_sql() -> str:
    return f"SET LOCAL lock_timeout = '{int(get_settings().migration_lock_timeout_ms)}ms'"


def do_run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        set_sqlite_foreign_keys(connection, enabled=False)
    try:
        # One transaction around the whole run, begun before configure() so that Alembic
        # treats it as external and never commits half-way. tickvault's SQLite engine
        # emits BEGIN itself, which makes SQLite DDL transactional too. A connection
        # handed in inside a transaction (Alembic's `with engine.begin() as connection`
        # recipe) runs in that one, which its owner commits; SQLite refused it above.
        transaction = nullcontext() if connection.in_transaction() else connection.begin()
        with transaction:
            _configure(connection=connection, render_as_batch=is_sqlite, transactional_ddl=True)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(_lock_timeout_sql())
            context.run_migrations()
            if is_sqlite:
                check_foreign_keys(connection)
    finally:
        if is_sqlite:
            set_sqlite_foreign_keys(connection, enabled=True)


async def run_async_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        do_run_migrations(connectable)
        return
    engine = connectable if isinstance(connectable, AsyncEngine) else create_engine(_database_url())

    async def run_and_dispose() -> None:
        try:
            await run_async_migrations(engine)
        finally:
            # asyncio.run() closes this loop: no pooled connection may outlive it.
            await engine.dispose()

    asyncio.run(run_and_dispose())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
