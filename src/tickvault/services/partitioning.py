"""Convert market_data to a time-partitioned table on PostgreSQL, and back, while it is
written to.

::

    report = await partition(engine, "1d", on_progress=print)   # PostgreSQL only
    report.rows_moved, report.partitions
    await unpartition(engine)

Both build the other layout beside the live table, as ``market_data_new`` with the same
columns, defaults, indexes and foreign keys (read from the catalog, under temporary names),
then:

1. in one short transaction, add statement triggers on market_data that repeat every INSERT
   (COPY included), UPDATE and DELETE on market_data_new, so that from their COMMIT on
   nothing written is missed (creating them waits for writes already running to commit);
2. copy the rows present then, in batches by id, each its own transaction. A batch locks
   its rows ``FOR SHARE NOWAIT``: a row a writer is changing makes the batch roll back and
   come again, so the copy never waits for a writer, and a writer waits at most one batch
   for the copy; rows the triggers copied already are skipped (``ON CONFLICT DO NOTHING``);
3. swap in one transaction (ACCESS EXCLUSIVE on market_data, catalog work only): the id
   sequence passes to the new table, the old table is dropped, the new one and its
   indexes and constraints take the old names.

Until the swap market_data is the table it was: a conversion that fails or is stopped
removes what it built (``market_data_new``, the triggers) and leaves market_data as it
found it, every row included; one killed outright leaves them behind (writes go on,
repeated twice), and the next run removes them first, then starts over.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tickvault.database import partitions as parts
from tickvault.database.types import utcnow
from tickvault.errors import MigrationError
from tickvault.settings import get_settings

TABLE = parts.TABLE
NEW = f"{TABLE}_new"
MIRROR = f"{TABLE}_conversion_mirror"  # the trigger function, and its triggers' prefix
TEMP = "__conv"  # suffix of the new table's constraint and index names until the swap
SWAP_ATTEMPTS = 20
MAX_PARTITIONS = 400  # each one, with its indexes, is a lock of every query that cannot prune

Progress = Callable[[int, int], None]  # (rows copied so far, rows to copy)


@dataclass
class ConversionReport:
    converted: bool = False  # False: the table was partitioned already
    rows_moved: int = 0
    partitions: list[str] = field(default_factory=list)  # created (partition / ahead)
    leftovers_removed: bool = False  # an interrupted conversion was cleaned up first
    default_rows: int = 0  # rows in the default partition (a partition missing)


@dataclass(frozen=True)
class _Catalog:
    columns: list[str]
    indexes: list[tuple[str, str]]  # (name, CREATE INDEX statement)
    constraints: list[tuple[str, str]]  # (name, definition): foreign keys and checks
    primary_key: str


async def partition(
    engine: AsyncEngine,
    interval: str,
    *,
    ahead: int = 4,
    batch_size: int = 10_000,
    on_progress: Progress | None = None,
) -> ConversionReport:
    """Convert market_data to range partitions of ``interval`` (1d, 1w, 1mo), with
    partitions from its oldest row's period to ``ahead`` periods past now, and a default.

    On a table already partitioned with that interval, only creates the partitions missing
    up to ``ahead`` periods past now (run it daily)."""
    size = parts.interval_of(interval)
    _require_postgres(engine, "partition")
    if ahead < 1:
        raise MigrationError(f"--ahead must be at least 1, got {ahead}")
    async with engine.begin() as connection:
        layout = await parts.read_layout(connection)
        if layout is not None:
            if layout.interval not in (size, None):
                raise MigrationError(
                    f"market_data is already partitioned by {layout.interval.name}; run "
                    f"`tickvault db unpartition` first to change the interval to {interval}"
                )
            report = ConversionReport()
            report.partitions = await parts.create_ahead(connection, layout, size, utcnow(), ahead)
            if layout.default is not None:
                report.default_rows = await parts.count_rows(connection, layout.default)
            return report

    async def build(connection: AsyncConnection, catalog: _Catalog) -> list[str]:
        await connection.execute(
            text(
                f"CREATE TABLE {NEW} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                'INCLUDING STORAGE) PARTITION BY RANGE ("timestamp")'
            )
        )
        await connection.execute(
            text(
                f"ALTER TABLE {NEW} ADD CONSTRAINT {catalog.primary_key}{TEMP} "
                'PRIMARY KEY (id, "timestamp")'
            )
        )
        first = await connection.scalar(text(f'SELECT min("timestamp") FROM {TABLE}'))
        newest = await connection.scalar(text(f'SELECT max("timestamp") FROM {TABLE}'))
        last = max(newest or utcnow(), utcnow())
        for _ in range(ahead):
            last = size.following(size.floor(last))
        created, spans = [], parts.periods(size, first or utcnow(), last)
        if len(spans) > MAX_PARTITIONS:
            raise MigrationError(
                f"--interval {interval} would make {len(spans):,} partitions (the oldest row "
                f"is from {first:%Y-%m-%d}), more than {MAX_PARTITIONS:,}: use a longer "
                "interval, or purge the oldest rows first"
            )
        for start, end in spans:
            await connection.execute(text(parts.create_sql(NEW, size, start, end)))
            created.append(size.partition_name(start))
        await connection.execute(
            text(f"CREATE TABLE {parts.DEFAULT_PARTITION} PARTITION OF {NEW} DEFAULT")
        )
        return [*created, parts.DEFAULT_PARTITION]

    return await _convert(engine, build, ("id", "timestamp"), batch_size, on_progress)


async def unpartition(
    engine: AsyncEngine, *, batch_size: int = 10_000, on_progress: Progress | None = None
) -> ConversionReport:
    """Convert a partitioned market_data back to one plain table, primary key (id)."""
    _require_postgres(engine, "unpartition")
    async with engine.connect() as connection:
        if not await parts.is_partitioned(connection):
            raise MigrationError("market_data is not partitioned: nothing to undo")

    async def build(connection: AsyncConnection, catalog: _Catalog) -> list[str]:
        await connection.execute(
            text(
                f"CREATE TABLE {NEW} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                "INCLUDING STORAGE)"
            )
        )
        await connection.execute(
            text(f"ALTER TABLE {NEW} ADD CONSTRAINT {catalog.primary_key}{TEMP} PRIMARY KEY (id)")
        )
        return []

    return await _convert(engine, build, ("id",), batch_size, on_progress)


def _require_postgres(engine: AsyncEngine, command: str) -> None:
    if engine.dialect.name != "postgresql":
        raise MigrationError(
            f"`tickvault db {command}` is for PostgreSQL: SQLite keeps market_data in one "
            "table (purge removes old rows there)"
        )


async def _convert(
    engine: AsyncEngine,
    build: Callable[[AsyncConnection, _Catalog], Awaitable[list[str]]],
    key: tuple[str, ...],
    batch_size: int,
    on_progress: Progress | None,
) -> ConversionReport:
    if not 1 <= batch_size <= 1_000_000:
        raise MigrationError(f"batch size must be between 1 and 1,000,000, got {batch_size}")
    report = ConversionReport(leftovers_removed=await remove_leftovers(engine))
    try:
        async with engine.begin() as connection:
            await _lock_timeout(connection)
            catalog = await _read_catalog(connection)
            report.partitions = await build(connection, catalog)
            for _, statement in catalog.indexes:
                await connection.execute(text(statement))
            for name, definition in catalog.constraints:
                await connection.execute(
                    text(f"ALTER TABLE {NEW} ADD CONSTRAINT {name}{TEMP} {definition}")
                )
            for statement in _mirror_sql(catalog.columns, key):
                await connection.execute(text(statement))
        report.rows_moved = await _copy(engine, catalog.columns, batch_size, on_progress)
        await _swap(engine, catalog)
        report.converted = True
    except BaseException:
        await asyncio.shield(remove_leftovers(engine))
        raise
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f"ANALYZE {TABLE}"))
    return report


async def remove_leftovers(engine: AsyncEngine) -> bool:
    """Drop what an unfinished conversion built; True if there was any."""
    async with engine.begin() as connection:
        await _lock_timeout(connection)
        found = await connection.scalar(text(f"SELECT to_regclass('{NEW}') IS NOT NULL"))
        mirror = await connection.scalar(text(f"SELECT to_regprocedure('{MIRROR}()') IS NOT NULL"))
        if mirror:
            await connection.execute(text(f"DROP FUNCTION {MIRROR}() CASCADE"))  # its triggers
        if found:
            await connection.execute(text(f"DROP TABLE {NEW}"))
    return bool(found or mirror)


async def _lock_timeout(connection: AsyncConnection) -> None:
    timeout = int(get_settings().migration_lock_timeout_ms)
    await connection.execute(text(f"SET LOCAL lock_timeout = '{timeout}ms'"))


async def _read_catalog(connection: AsyncConnection) -> _Catalog:
    columns = list(
        (
            await connection.execute(
                text(
                    f"SELECT attname FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                )
            )
        ).scalars()
    )
    indexes = []
    rows = await connection.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            f"JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = '{TABLE}'::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
            "ORDER BY c.relname"
        )
    )
    for name, definition in rows:
        head, _, tail = definition.partition(" USING ")
        indexes.append(
            (
                name,
                f"CREATE {'UNIQUE ' if 'UNIQUE' in head else ''}INDEX {name}{TEMP} "
                f"ON {NEW} USING {tail}",
            )
        )
    constraints, primary_key = [], ""
    rows = await connection.execute(
        text(
            "SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE conrelid = '{TABLE}'::regclass AND contype IN ('p', 'f', 'u', 'x') "
            "AND conparentid = 0 ORDER BY conname"
        )
    )
    for name, kind, definition in rows:
        if kind == "p":
            primary_key = name
        elif kind == "f":
            constraints.append((name, definition))
        else:
            raise MigrationError(
                f"market_data has constraint {name} ({definition}), which tickvault's schema "
                "does not: convert it by hand"
            )
    return _Catalog(columns, indexes, constraints, primary_key)


def _quoted(columns: list[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in columns)


def _mirror_sql(columns: list[str], key: tuple[str, ...]) -> list[str]:
    """The trigger function and the three statement triggers that repeat writes on NEW."""
    cols = _quoted(columns)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns)
    matches = " AND ".join(f't."{c}" = o."{c}"' for c in key)
    upsert = (
        f"INSERT INTO {NEW} ({cols}) SELECT {cols} FROM new_rows "
        f"ON CONFLICT ({_quoted(list(key))}) DO UPDATE SET {updates};"
    )
    remove = f"DELETE FROM {NEW} t USING old_rows o WHERE {matches};"
    body = (
        "BEGIN\n"
        f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {remove} END IF;\n"
        f"  IF TG_OP IN ('INSERT', 'UPDATE') THEN {upsert} END IF;\n"
        "  RETURN NULL;\n"
        "END"
    )
    statements = [f"CREATE FUNCTION {MIRROR}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$"]
    referencing = {
        "INSERT": "NEW TABLE AS new_rows",
        "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "DELETE": "OLD TABLE AS old_rows",
    }
    for event, tables in referencing.items():
        statements.append(
            f"CREATE TRIGGER {MIRROR}_{event.lower()} AFTER {event} ON {TABLE} "
            f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {MIRROR}()"
        )
    return statements


async def _copy(
    engine: AsyncEngine, columns: list[str], batch_size: int, on_progress: Progress | None
) -> int:
    """Copy every row committed before the triggers, in batches by id; returns how many
    rows the batches inserted (rows the triggers had copied already are not counted)."""
    async with engine.connect() as connection:
        stop, total = (
            await connection.execute(text(f"SELECT max(id), count(*) FROM {TABLE}"))
        ).one()
    cols = _quoted(columns)
    copy = text(
        f"INSERT INTO {NEW} ({cols}) SELECT {cols} FROM (SELECT * FROM {TABLE} "
        "WHERE id > :after AND id <= :upto FOR SHARE NOWAIT) AS batch ON CONFLICT DO NOTHING"
    )
    upper = text(
        f"SELECT max(id) FROM (SELECT id FROM {TABLE} WHERE id > :after AND id <= :stop "
        "ORDER BY id LIMIT :n) AS ids"
    )
    after, moved, retries = 0, 0, 0
    while stop is not None and after < stop:
        try:
            async with engine.begin() as connection:
                upto = await connection.scalar(
                    upper, {"after": after, "stop": stop, "n": batch_size}
                )
                if upto is None:
                    break
                result = await connection.execute(copy, {"after": after, "upto": upto})
        except DBAPIError as exc:
            # 55P03: a writer holds one of the batch's rows; come again once it commits.
            if getattr(exc.orig, "sqlstate", None) != "55P03" or retries >= 1_000:
                raise
            retries += 1
            await asyncio.sleep(min(0.01 * retries, 0.5))
            continue
        retries = 0
        after = upto
        moved += max(int(result.rowcount), 0)
        if on_progress is not None:
            on_progress(moved, int(total))
    return moved


async def _swap(engine: AsyncEngine, catalog: _Catalog) -> None:
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            async with engine.begin() as connection:
                await _lock_timeout(connection)
                await connection.execute(text(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"))
                await _swap_catalog(connection, catalog)
            return
        except DBAPIError as exc:
            # 55P03: lock timeout, the table stayed busy; try again shortly.
            if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == SWAP_ATTEMPTS:
                raise
            await asyncio.sleep(0.2 * attempt)


async def _swap_catalog(connection: AsyncConnection, catalog: _Catalog) -> None:
    sequence = await connection.scalar(text(f"SELECT pg_get_serial_sequence('{TABLE}', 'id')"))
    if sequence is not None:
        # Owned by the old table's column, the sequence would be dropped with it.
        await connection.execute(text(f"ALTER SEQUENCE {sequence} OWNED BY {NEW}.id"))
    await connection.execute(text(f"DROP TABLE {TABLE}"))
    await connection.execute(text(f"DROP FUNCTION {MIRROR}()"))
    await connection.execute(text(f"ALTER TABLE {NEW} RENAME TO {TABLE}"))
    renames = [catalog.primary_key, *(name for name, _ in catalog.constraints)]
    for name in renames:
        await connection.execute(
            text(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {name}{TEMP} TO {name}")
        )
    for name, _ in catalog.indexes:
        await connection.execute(text(f"ALTER INDEX {name}{TEMP} RENAME TO {name}"))
