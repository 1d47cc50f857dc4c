"""Shared steps of tickvault's revisions: engine checks, data checks, messages."""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from tickvault.errors import MigrationError

logger = logging.getLogger("tickvault.migrations")

# The largest magnitude NUMERIC(12,4) holds once a value is rounded to 4 decimals.
DECIMAL_12_4_LIMIT = 99999999.99995


def set_sqlite_foreign_keys(connection: Connection, *, enabled: bool) -> None:
    """Switch SQLite's foreign keys on or off; only works outside a transaction."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
        cursor.execute("PRAGMA foreign_keys")
        row = cursor.fetchone()
        actual = row is not None and bool(row[0])
    finally:
        cursor.close()
    if actual != enabled:
        # With foreign keys still on, recreating a parent table would cascade into
        # its children and silently empty them: refuse instead.
        raise MigrationError(
            "could not switch SQLite foreign keys "
            f"{'on' if enabled else 'off'}: run migrations on a connection that is "
            "not inside a transaction"
        )


def check_foreign_keys(connection: Connection) -> None:
    """Raise (so the transaction rolls back) if any row breaks a foreign key."""
    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        by_table: dict[str, int] = {}
        for row in problems:
            by_table[row[0]] = by_table.get(row[0], 0) + 1
        detail = ", ".join(f"{table}: {count} rows" for table, count in sorted(by_table.items()))
        raise MigrationError(f"foreign key check failed after migration ({detail}); rolled back")


def is_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def is_offline() -> bool:
    return op.get_context().as_sql


def require_decimal_12_4(columns: dict[str, list[str]]) -> None:
    """Refuse, before any change, if a value cannot be stored as NUMERIC(12,4).

    Counts the rows per table and column that are not finite or whose magnitude, rounded
    to 4 decimals, reaches 1e8, and raises ``MigrationError`` naming them all. Offline
    (``--sql``, PostgreSQL) the same check is a statement of the script that raises an
    exception with the same message, which stops the script and rolls its transaction back.
    """
    if is_offline():
        if op.get_context().dialect.name == "postgresql":
            op.execute(decimal_12_4_check_sql(columns))
        return
    bind = op.get_bind()
    problems = []
    for table, names in columns.items():
        for name in names:
            column: sa.ColumnClause[float] = sa.column(name, sa.Double())
            fits = sa.and_(column > -DECIMAL_12_4_LIMIT, column < DECIMAL_12_4_LIMIT)
            count = bind.execute(
                sa.select(sa.func.count())
                .select_from(sa.table(table, column))
                .where(column.is_not(None), sa.not_(fits))
            ).scalar_one()
            if count:
                problems.append(f"{table}.{name}: {count} rows")
    if problems:
        raise MigrationError(_decimal_refusal("; ".join(problems)))


def _decimal_refusal(problems: str) -> str:
    return (
        "cannot convert FLOAT back to DECIMAL(12,4): values that are not finite or "
        f"whose magnitude reaches 1e8 in {problems}. Nothing was changed; "
        "fix or remove those rows first."
    )


def decimal_12_4_check_sql(columns: dict[str, list[str]]) -> str:
    """PostgreSQL: a DO block that raises ``_decimal_refusal`` when a value does not fit.

    One scan per table (a filtered count per column). NULL is skipped, NaN counts (it sorts
    above every number on PostgreSQL), as do the infinities.
    """
    before, after = (part.replace("'", "''") for part in _decimal_refusal("\0").split("\0"))
    limit = repr(DECIMAL_12_4_LIMIT)
    lines = ["DO $check$", "DECLARE", "    found bigint[];", "    problems text[] := '{}';"]
    lines.append("BEGIN")
    for table, names in columns.items():
        counts = ", ".join(
            f"count(*) FILTER (WHERE NOT ({c} > -{limit} AND {c} < {limit}))" for c in names
        )
        lines.append(f"    SELECT ARRAY[{counts}] INTO found FROM {table};")
        for i, name in enumerate(names, start=1):
            lines.append(
                f"    IF found[{i}] > 0 THEN problems := problems || "
                f"('{table}.{name}: ' || found[{i}] || ' rows'); END IF;"
            )
    lines += [
        "    IF cardinality(problems) > 0 THEN",
        f"        RAISE EXCEPTION '%', '{before}' || array_to_string(problems, '; ') || '{after}'",
        "            USING ERRCODE = 'data_exception';",
        "    END IF;",
        "END",
        "$check$",
    ]
    return "\n".join(lines)


def count_soft_deleted(table: str) -> int:
    if is_offline():
        return 0
    deleted_at: sa.ColumnClause[object] = sa.column("deleted_at")
    return int(
        op.get_bind()
        .execute(
            sa.select(sa.func.count())
            .select_from(sa.table(table, deleted_at))
            .where(deleted_at.is_not(None))
        )
        .scalar_one()
    )
