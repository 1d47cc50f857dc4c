"""Index usage, from each engine's own sources.

PostgreSQL: ``pg_stat_user_tables``, ``pg_stat_user_indexes`` and ``pg_statio_user_indexes``,
read as typed rows; ``IndexUsageTracker`` turns them into deltas over a trailing window.
SQLite has no such statistics: ``explain(statement)`` runs ``EXPLAIN QUERY PLAN`` once per
distinct statement and classifies it (SEARCH … USING INDEX vs SCAN); the monitor counts
executions per plan.
"""

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

PG_TABLES = text("""
SELECT relname AS table_name, seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_live_tup,
       pg_relation_size(relid) AS table_bytes, pg_indexes_size(relid) AS index_bytes
FROM pg_stat_user_tables
""")
PG_INDEXES = text("""
SELECT s.relname AS table_name, s.indexrelname AS index_name, s.idx_scan, s.idx_tup_read,
       io.idx_blks_hit, io.idx_blks_read, pg_relation_size(s.indexrelid) AS index_bytes,
       i.indisunique OR i.indisprimary AS is_unique
FROM pg_stat_user_indexes s
JOIN pg_statio_user_indexes io ON io.indexrelid = s.indexrelid
JOIN pg_index i ON i.indexrelid = s.indexrelid
""")


@dataclass(frozen=True)
class PgTableStats:
    table_name: str
    seq_scan: int
    idx_scan: int
    n_live_tup: int
    table_bytes: int
    index_bytes: int


@dataclass(frozen=True)
class PgIndexStats:
    table_name: str
    index_name: str
    idx_scan: int
    idx_tup_read: int
    idx_blks_hit: int
    idx_blks_read: int
    index_bytes: int
    is_unique: bool


async def read_pg_stats(
    connection: AsyncConnection,
) -> tuple[list[PgTableStats], list[PgIndexStats]]:
    # A fresh snapshot: within a transaction PostgreSQL would keep returning the first one.
    await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    tables = [PgTableStats(**row) for row in (await connection.execute(PG_TABLES)).mappings()]
    indexes = [PgIndexStats(**row) for row in (await connection.execute(PG_INDEXES)).mappings()]
    return tables, indexes


@dataclass(frozen=True)
class _Reading:
    at: float
    tables: dict[str, PgTableStats]
    indexes: dict[tuple[str, str], PgIndexStats]


@dataclass
class IndexUsageTracker:
    """Deltas of PostgreSQL's cumulative counters over a trailing window.

    Each reading is compared with the one kept at or before ``now - window_seconds`` (the
    oldest kept until one is that old), never with whoever read last: any number of readers
    see the same figures. A reading is kept when the last kept one is a tenth of the window
    old, so at most a dozen are held.
    """

    window_seconds: float = 60.0
    _readings: deque[_Reading] = field(default_factory=deque)

    def update(
        self, tables: list[PgTableStats], indexes: list[PgIndexStats], now: float
    ) -> tuple[float | None, dict[str, Any]]:
        """(seconds the deltas cover, None when there was no reading before; the report)."""
        reading = _Reading(
            now,
            {t.table_name: t for t in tables},
            {(i.table_name, i.index_name): i for i in indexes},
        )
        base = self._baseline(now)
        if not self._readings or now - self._readings[-1].at >= self.window_seconds / 10:
            self._readings.append(reading)
        report: dict[str, Any] = {}
        for t in tables:
            before = base.tables.get(t.table_name) if base else None
            seq = t.seq_scan - (before.seq_scan if before else 0)
            idx = t.idx_scan - (before.idx_scan if before else 0)
            report[t.table_name] = {
                "seq_scans": seq,
                "index_scans": idx,
                "index_scan_share": round(idx / (seq + idx), 4) if seq + idx else None,
                "rows_estimate": t.n_live_tup,
                "table_bytes": t.table_bytes,
                "index_bytes": t.index_bytes,
                "indexes": {},
            }
        for i in indexes:
            before_i = base.indexes.get((i.table_name, i.index_name)) if base else None
            blocks = i.idx_blks_hit + i.idx_blks_read
            entry = {
                "scans": i.idx_scan - (before_i.idx_scan if before_i else 0),
                "scans_total": i.idx_scan,
                "hit_rate": round(i.idx_blks_hit / blocks, 4) if blocks else None,
                "size_bytes": i.index_bytes,
                "unused": i.idx_scan == 0 and not i.is_unique,
            }
            report.setdefault(i.table_name, {"indexes": {}})["indexes"][i.index_name] = entry
        return (round(now - base.at, 6) if base else None), report

    def _baseline(self, now: float) -> _Reading | None:
        # Readings older than the newest one at or before the window's start are done with.
        while len(self._readings) > 1 and self._readings[1].at <= now - self.window_seconds:
            self._readings.popleft()
        return self._readings[0] if self._readings else None


_USING_INDEX = re.compile(r"USING (?:COVERING )?INDEX (\w+)")


@dataclass(frozen=True)
class SqlitePlan:
    """What ``EXPLAIN QUERY PLAN`` said about one statement."""

    used_index: bool
    full_scans: tuple[str, ...]  # tables read from end to end
    indexes: tuple[str, ...]  # indexes searched


def classify_plan(details: list[str]) -> SqlitePlan:
    """``["SEARCH market_data USING INDEX ix_x (instrument_id=?)"]`` → used_index=True."""
    searched: list[str] = []
    scanned: list[str] = []
    for detail in details:
        words = detail.split()
        if len(words) < 2:
            continue
        match = _USING_INDEX.search(detail)
        if words[0] == "SEARCH":
            if match:
                searched.append(match.group(1))
            elif "PRIMARY KEY" in detail:
                searched.append("PRIMARY KEY")
        elif words[0] == "SCAN" and not words[1].startswith("CONSTANT"):
            scanned.append(words[1])
    return SqlitePlan(bool(searched) and not scanned, tuple(scanned), tuple(searched))


async def explain_sqlite(
    connection: AsyncConnection, statement: str, parameter_count: int
) -> SqlitePlan:
    """The plan of ``statement``, its parameters bound to NULL (plans rarely depend on them)."""
    result = await connection.exec_driver_sql(
        "EXPLAIN QUERY PLAN " + statement, tuple([None] * parameter_count)
    )
    return classify_plan([str(row[-1]) for row in result])


@dataclass
class SqlitePlanCache:
    """Plans of the statements seen, learnt lazily: ``lookup`` notes a new statement, and
    ``refresh`` (on the monitor's own connection) explains the noted ones in one go."""

    max_plans: int = 4096
    plans: dict[str, SqlitePlan | None] = field(default_factory=dict)  # None: unexplainable
    pending: dict[str, int] = field(default_factory=dict)

    def lookup(self, statement: str, parameter_count: int) -> bool | None:
        """Whether ``statement`` uses an index, if known yet."""
        if statement in self.plans:
            plan = self.plans[statement]
            return plan.used_index if plan is not None else None
        if len(self.plans) + len(self.pending) < self.max_plans:
            self.pending.setdefault(statement, parameter_count)
        return None

    async def refresh(self, connection: AsyncConnection) -> None:
        pending, self.pending = self.pending, {}
        for statement, parameter_count in pending.items():
            try:
                self.plans[statement] = await explain_sqlite(connection, statement, parameter_count)
            except Exception:
                self.plans[statement] = None

    def known(self) -> list[SqlitePlan]:
        return [plan for plan in self.plans.values() if plan is not None]

    def indexes_seen(self) -> list[str]:
        return sorted({name for plan in self.known() for name in plan.indexes})
