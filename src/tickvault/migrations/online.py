"""Indexes PostgreSQL can build without blocking writers, before their revision runs.

A plain ``CREATE INDEX`` inside a migration holds a SHARE lock on the table until the run
commits: every INSERT waits for the whole build. ``CREATE INDEX CONCURRENTLY`` takes only
SHARE UPDATE EXCLUSIVE (writers go on), but cannot run inside a transaction, and Alembic runs
a migration in one. So the operator builds them first, outside any transaction::

    tickvault db build-indexes      # PostgreSQL: CONCURRENTLY, for the next revision
    tickvault db upgrade            # the revision finds them built and keeps them

The revision keeps an index it finds valid and exactly as defined here; anything else under
that name (the older definition, or an INVALID leftover of a failed build) it rebuilds the
ordinary way. Without the first step the upgrade does the same work with plain DDL.
"""

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

DELETED = "deleted_at IS NOT NULL"


@dataclass(frozen=True)
class OnlineIndex:
    name: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None  # a partial index's predicate, the same on both engines

    def create_sql(self, *, name: str | None = None, concurrently: bool = False) -> str:
        columns = ", ".join(f'"{c}"' for c in self.columns)
        where = f" WHERE {self.where}" if self.where else ""
        how = " CONCURRENTLY" if concurrently else ""
        return f"CREATE INDEX{how} {name or self.name} ON {self.table} ({columns}){where}"


# Per revision, the indexes it creates. Frozen with their revision: never edit an entry,
# add one for a new revision.
ONLINE_INDEXES: dict[str, tuple[OnlineIndex, ...]] = {
    "a7c3e9d15b42": (
        OnlineIndex(
            "ix_market_data_instrument_timestamp",
            "market_data",
            ("instrument_id", "timestamp", "id"),
        ),
        OnlineIndex("ix_market_data_deleted_at", "market_data", ("deleted_at",), DELETED),
        OnlineIndex("ix_alert_logs_deleted_at", "alert_logs", ("deleted_at",), DELETED),
        OnlineIndex("ix_alert_rules_instrument", "alert_rules", ("instrument_id",)),
    ),
}


def _normalized(predicate: object) -> str | None:
    if predicate is None:
        return None
    return " ".join(str(predicate).replace("(", " ").replace(")", " ").split()).lower()


def existing(connection: Connection, index: OnlineIndex) -> tuple[bool, bool] | None:
    """``(valid, as defined)`` for an index of that name on PostgreSQL, or None if absent."""
    valid = connection.execute(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
        ),
        {"name": index.name},
    ).scalar_one_or_none()
    if valid is None:
        return None
    for found in sa.inspect(connection).get_indexes(index.table):
        if found["name"] == index.name:
            where = found.get("dialect_options", {}).get("postgresql_where")
            same = tuple(found["column_names"]) == index.columns and _normalized(
                where
            ) == _normalized(index.where)
            return bool(valid), same
    return bool(valid), False


def build_concurrently(connection: Connection, index: OnlineIndex) -> bool:
    """Build ``index`` with CREATE INDEX CONCURRENTLY on an AUTOCOMMIT connection.

    Returns False when it is already there as defined. An index of that name with another
    definition is replaced without a gap: the new one is built under a temporary name, then
    the old one dropped CONCURRENTLY and the new one renamed. A build that fails leaves
    nothing behind (its INVALID index is dropped) and raises.
    """
    found = existing(connection, index)
    if found == (True, True):
        return False
    if found is not None and not found[0]:
        connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}")
        found = None
    target = index.name if found is None else f"{index.name}_new"
    connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}_new")
    try:
        connection.exec_driver_sql(index.create_sql(name=target, concurrently=True))
    except Exception:
        connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {target}")
        raise
    if target != index.name:
        connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY {index.name}")
        connection.exec_driver_sql(f"ALTER INDEX {target} RENAME TO {index.name}")
    return True
