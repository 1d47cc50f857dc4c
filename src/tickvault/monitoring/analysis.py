"""One table's health: size, indexes, scans, latencies, and what to do about them.

The table name is checked against the database's own catalog before anything else, and no
SQL is ever built from it: catalog queries bind it as a parameter, and the row count goes
through SQLAlchemy's quoting.
"""

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tickvault.database.partitions import is_partitioned
from tickvault.errors import UnknownTableError
from tickvault.monitoring.index_usage import SqlitePlan, read_pg_stats
from tickvault.settings import get_settings

PG_SIZES = sa.text(
    "SELECT pg_relation_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes, "
    "c.reltuples::bigint AS rows_estimate FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :table AND n.nspname = current_schema()"
)
SQLITE_SIZES = sa.text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
SEQ_SCAN_WARNING_SHARE = 0.5
# Advice about scans, unused indexes and INSERT latency needs a table this large: below it a
# full scan is cheap, and one slow write (a new connection's first, a checkpoint) is noise.
LARGE_TABLE_ROWS = 10_000
# INSERT latency is "uneven" when, over at least this many inserts, the p99 is both this many
# times the p50 and a slow query in itself (the slow-query threshold).
UNEVEN_INSERT_MIN_COUNT = 1_000
UNEVEN_INSERT_RATIO = 10


def _index_columns(connection: sa.Connection, table: str) -> dict[str, list[str]]:
    inspector = sa.inspect(connection)
    return {
        str(ix["name"]): [str(c) for c in ix["column_names"] if c is not None]
        for ix in inspector.get_indexes(table)
    }


async def analyze_table(
    connection: AsyncConnection,
    table: str,
    *,
    latencies: dict[str, dict[str, float | int]],
    plans: Iterable[SqlitePlan],
    executions: tuple[int, int] = (0, 0),
    slow_query_ms: float | None = None,
) -> dict[str, Any]:
    """The analysis of ``table``; ``executions`` = (index searches, full scans) tracked on it
    (SQLite's only source for the scan share); ``slow_query_ms``: see ``recommend``."""
    names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
    if table not in names:
        raise UnknownTableError(
            f"unknown table {table!r}: the database has {', '.join(sorted(names)) or 'none'}"
        )
    index_columns = await connection.run_sync(_index_columns, table)
    dialect = connection.dialect.name
    indexes: dict[str, dict[str, Any]] = {
        name: {"columns": cols, "duplicate_of": _covering_index(name, cols, index_columns)}
        for name, cols in index_columns.items()
    }
    report: dict[str, Any] = {"table": table, "engine": dialect}
    if dialect == "postgresql":
        sizes = (await connection.execute(PG_SIZES, {"table": table})).mappings().one()
        report.update(
            rows_estimate=max(int(sizes["rows_estimate"]), 0),
            table_bytes=sizes["table_bytes"],
            index_bytes=sizes["index_bytes"],
        )
        if await is_partitioned(connection, table):
            report.update(await _partition_figures(connection, table))
        tables, index_stats = await read_pg_stats(connection)
        stats = next((t for t in tables if t.table_name == table), None)
        if stats is not None:
            total = stats.seq_scan + stats.idx_scan
            report["seq_scans"], report["index_scans"] = stats.seq_scan, stats.idx_scan
            report["seq_scan_share"] = round(stats.seq_scan / total, 4) if total else None
            if stats.n_live_tup > report["rows_estimate"]:
                report["rows_estimate"] = stats.n_live_tup
        for i in index_stats:
            if i.table_name == table and i.index_name in indexes:
                blocks = i.idx_blks_hit + i.idx_blks_read
                indexes[i.index_name].update(
                    scans=i.idx_scan,
                    size_bytes=i.index_bytes,
                    hit_rate=round(i.idx_blks_hit / blocks, 4) if blocks else None,
                    unused=i.idx_scan == 0 and not i.is_unique,
                )
    else:
        count = sa.select(sa.func.count()).select_from(sa.table(table))
        report["rows"] = (await connection.execute(count)).scalar_one()
        report.update(await _sqlite_sizes(connection, table, index_columns))
        used: dict[str, int] = {}
        for plan in plans:
            for name in plan.indexes:
                used[name] = used.get(name, 0) + 1
        searches, scans = executions
        for name, entry in indexes.items():
            entry.update(plans_using=used.get(name, 0), unused=used.get(name, 0) == 0)
            entry["size_bytes"] = report.get("index_sizes", {}).get(name)
        report.pop("index_sizes", None)
        report["seq_scan_share"] = (
            round(scans / (scans + searches), 4) if scans + searches else None
        )
    report["indexes"] = indexes
    report["latencies"] = latencies
    report["recommendations"] = recommend(report, slow_query_ms=slow_query_ms)
    return report


PG_PARTITIONS = sa.text(
    "SELECT count(*) AS partitions, coalesce(sum(pg_relation_size(c.oid)), 0) AS table_bytes, "
    "coalesce(sum(pg_indexes_size(c.oid)), 0) AS index_bytes, "
    "coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS rows_estimate "
    "FROM pg_partition_tree(CAST(:table AS regclass)) t JOIN pg_class c ON c.oid = t.relid "
    "WHERE t.isleaf"
)


async def _partition_figures(connection: AsyncConnection, table: str) -> dict[str, Any]:
    """A partitioned table's figures are its partitions' sums; and the rows of its default
    partition, which a missing partition sends there."""
    figures = dict((await connection.execute(PG_PARTITIONS, {"table": table})).mappings().one())
    default = await connection.scalar(
        sa.text(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c "
            "ON c.oid = p.partdefid WHERE p.partrelid = CAST(:table AS regclass)"
        ),
        {"table": table},
    )
    if default is not None:
        count = sa.select(sa.func.count()).select_from(sa.table(default))
        figures["default_partition"] = default
        figures["default_partition_rows"] = (await connection.execute(count)).scalar_one()
    return figures


def _covering_index(name: str, columns: list[str], all_indexes: dict[str, list[str]]) -> str | None:
    """Another index whose leading columns are this one's: this one is redundant."""
    for other, other_columns in sorted(all_indexes.items()):
        is_prefix = other != name and columns and other_columns[: len(columns)] == columns
        if is_prefix and (len(other_columns) > len(columns) or other < name):
            return other
    return None


async def _sqlite_sizes(
    connection: AsyncConnection, table: str, indexes: dict[str, list[str]]
) -> dict[str, Any]:
    try:
        rows = (await connection.execute(SQLITE_SIZES)).all()
        sizes: dict[str, int] = {str(name): int(size) for name, size in rows}
    except sa.exc.OperationalError:  # SQLite built without the dbstat table
        return {"table_bytes": None, "index_bytes": None, "index_sizes": {}}
    index_sizes = {name: sizes.get(name) for name in indexes}
    return {
        "table_bytes": sizes.get(table),
        "index_bytes": sum(v for v in index_sizes.values() if v is not None),
        "index_sizes": index_sizes,
    }


def recommend(report: dict[str, Any], *, slow_query_ms: float | None = None) -> list[str]:
    """Plain-language advice from the figures of one table.

    ``slow_query_ms``: the slow-query threshold (default: the settings'); an INSERT p99 under
    it is not worth chasing, however far from the median.
    """
    if slow_query_ms is None:
        slow_query_ms = get_settings().slow_query_threshold_ms
    advice = []
    rows = report.get("rows", report.get("rows_estimate", 0)) or 0
    for name, index in sorted(report["indexes"].items()):
        if index.get("duplicate_of"):
            advice.append(
                f"Index {name} ({', '.join(index['columns'])}) is covered by "
                f"{index['duplicate_of']}, whose leading columns are the same: drop {name} "
                "to make every insert cheaper."
            )
        elif index.get("unused") and rows >= LARGE_TABLE_ROWS:
            advice.append(
                f"Index {name} has not been used "
                f"({'no scans since statistics were reset' if report['engine'] == 'postgresql' else 'no tracked query plan uses it'}); "  # noqa: E501
                "if that holds over a full business cycle, dropping it makes inserts cheaper."
            )
    share = report.get("seq_scan_share")
    if share is not None and share > SEQ_SCAN_WARNING_SHARE and rows >= LARGE_TABLE_ROWS:
        advice.append(
            f"{share:.0%} of the reads of {report['table']} scan the whole table "
            f"({rows:,} rows): look for a filter on a column no index leads with."
        )
    insert = report["latencies"].get("INSERT")
    if (
        insert
        and rows >= LARGE_TABLE_ROWS
        and insert["count"] >= UNEVEN_INSERT_MIN_COUNT
        and insert["p99_ms"] >= slow_query_ms
        and insert["p99_ms"] > UNEVEN_INSERT_RATIO * max(insert["p50_ms"], 0.001)
    ):
        advice.append(
            f"INSERT latency is uneven (p99 {insert['p99_ms']} ms vs p50 {insert['p50_ms']} ms "
            f"over {insert['count']:,} inserts): look for lock waits or checkpoints, and batch "
            "single-row writes."
        )
    if report.get("default_partition_rows"):
        advice.append(
            f"{report['default_partition_rows']:,} rows of {report['table']} are in "
            f"{report['default_partition']}: no partition covers their time. Run `tickvault db "
            "partition` with the table's interval: it creates their partitions and moves them "
            "there (purge never drops the default partition)."
        )
    if not advice:
        advice.append(f"Nothing to change on {report['table']} from the figures so far.")
    return advice
