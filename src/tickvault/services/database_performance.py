"""The performance monitor: every statement measured, the database's own statistics read.

::

    monitor = get_performance_monitor()            # one per process
    monitor.instrument(engine)                     # capture every statement of engine
    await monitor.start_monitoring(interval_seconds=60)   # collect in the background
    metrics = await monitor.collect_metrics()      # PerformanceMetrics of the last window
    print(f"INSERT rate: {metrics.insert_rate}/sec")
    analysis = await monitor.analyze_table_performance("market_data")
    await monitor.stop_monitoring()

Without ``instrument()`` it still works from ``track_query()`` calls alone. Rates and
latencies cover a fixed trailing window (``window_seconds``, TICKVAULT_MONITOR_INTERVAL_SECONDS
by default; see ``tickvault.monitoring.window``): collecting resets nothing, so any number of
readers see the same figures. Totals are since the monitor started.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import tickvault.models  # noqa: F401  (registers the tables on Base.metadata)
from tickvault.database.base import Base
from tickvault.database.replica import Replication
from tickvault.database.types import utcnow
from tickvault.monitoring import capture
from tickvault.monitoring.analysis import analyze_table
from tickvault.monitoring.histogram import LatencyHistogram
from tickvault.monitoring.index_usage import IndexUsageTracker, SqlitePlanCache, read_pg_stats
from tickvault.monitoring.metrics import PerformanceMetrics, QueryPerformance, SlowQuery
from tickvault.monitoring.pool import PoolCounters, pool_status
from tickvault.monitoring.statements import QUERY_TYPES, classify
from tickvault.monitoring.window import TrailingWindow
from tickvault.settings import get_settings

logger = logging.getLogger("tickvault.monitor")

OTHER_TABLE = "other"
# Figures are kept per table for tickvault's own tables; anything else counts as "other",
# which bounds memory and the Prometheus label values.
KNOWN_TABLES = frozenset({*Base.metadata.tables, "alembic_version"})
EXPLAINED_TYPES = frozenset({"SELECT", "UPDATE", "DELETE"})
INSERT_TYPES = ("INSERT", "COPY")


@dataclass
class _Series:
    """Everything counted for one (table, query type)."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    rows: int = 0
    errors: int = 0
    index_used: int = 0
    full_scans: int = 0

    def snapshot(self) -> "_Series":
        return _Series(
            self.histogram.copy(), self.rows, self.errors, self.index_used, self.full_scans
        )


@dataclass(frozen=True)
class _Counters:
    """Everything the monitor has counted, as it stood at one moment."""

    series: dict[tuple[str, str], _Series]
    slow: int

    @classmethod
    def zero(cls) -> Self:
        return cls({}, 0)


class DatabasePerformanceMonitor:
    """Collects statement timings and database statistics; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine | Engine | None = None,
        *,
        slow_query_threshold_ms: float | None = None,
        slow_query_log_size: int = 100,
        history_size: int = 1440,
        window_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        settings = get_settings()
        self.slow_query_threshold_ms = (
            slow_query_threshold_ms
            if slow_query_threshold_ms is not None
            else settings.slow_query_threshold_ms
        )
        self.window_seconds = (
            window_seconds if window_seconds is not None else settings.monitor_interval_seconds
        )
        self._clock = clock
        self.slow_query_log: deque[SlowQuery] = deque(maxlen=slow_query_log_size)
        self.history: deque[PerformanceMetrics] = deque(maxlen=history_size)
        self.collection_failures = 0
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._slow_total = 0
        self._started_at = clock()
        self._window = TrailingWindow(self.window_seconds, self._started_at, _Counters.zero())
        self._plans = SqlitePlanCache()
        self._explain_plans = False
        self._pg_usage = IndexUsageTracker(self.window_seconds)
        self._pool_counters = PoolCounters()
        self._engine: AsyncEngine | None = None
        self._owned_engine: AsyncEngine | None = None
        self._detach: Callable[[], None] | None = None
        self._observed: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.last_index_usage: dict[str, Any] = {}
        # Set by a service with a read replica: its state and lag, reported with each
        # collection (ReadSessions.replication).
        self.replication: Callable[[], Awaitable[Replication | None]] | None = None
        self.last_replication: dict[str, Any] | None = None
        if engine is not None:
            self.instrument(engine)

    # -- capture -----------------------------------------------------------------------

    def instrument(self, engine: AsyncEngine | Engine) -> None:
        """Measure every statement ``engine`` runs, from now on."""
        if self._detach is not None:
            self.uninstrument()
        self._detach = capture.attach(engine, self)
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self._pool_counters.attach(sync_engine)
        self._engine = engine if isinstance(engine, AsyncEngine) else None
        self._sync_engine = sync_engine
        # SQLite keeps no index statistics: learn each statement's plan instead.
        self._explain_plans = sync_engine.dialect.name == "sqlite"

    def observe(self, engine: AsyncEngine | Engine) -> None:
        """Also measure the statements of ``engine`` (a read replica's), counted with the
        instrumented engine's; its pool and index statistics are not reported."""
        self._observed.append(capture.attach(engine, self))

    def uninstrument(self) -> None:
        while self._observed:
            self._observed.pop()()
        if self._detach is not None:
            self._detach()
            self._pool_counters.detach()
            self._detach = None

    def track_query(
        self,
        query_type: str,
        table_name: str | None,
        execution_time_ms: float,
        used_index: bool | None = None,
        rows: int = 1,
    ) -> QueryPerformance:
        """Record one statement by hand (``rows``: rows it inserted, for INSERT and COPY)."""
        query_type = query_type.upper() if query_type.upper() in QUERY_TYPES else "OTHER"
        self._record(query_type, table_name, execution_time_ms, rows, used_index, None)
        return QueryPerformance(query_type, table_name, execution_time_ms, used_index, rows)

    def record_statement(
        self, statement: str, duration_ms: float, rows: int, parameter_count: int
    ) -> None:
        info = classify(statement)
        if info is None:
            return
        used_index = (
            self._plans.lookup(statement, parameter_count)
            if self._explain_plans and info.query_type in EXPLAINED_TYPES
            else None
        )
        self._record(info.query_type, info.table, duration_ms, rows, used_index, statement)

    def record_error(self, statement: str, duration_ms: float) -> None:
        info = classify(statement)
        if info is None:
            return
        with self._lock:
            self._window.note(self._clock(), self._counters)
            self._series_for(info.table, info.query_type).errors += 1

    def _series_for(self, table: str | None, query_type: str) -> _Series:
        key = (table if table in KNOWN_TABLES else OTHER_TABLE, query_type)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        return series

    def _record(
        self,
        query_type: str,
        table: str | None,
        duration_ms: float,
        rows: int,
        used_index: bool | None,
        statement: str | None,
    ) -> None:
        with self._lock:
            self._window.note(self._clock(), self._counters)
            series = self._series_for(table, query_type)
            series.histogram.record(duration_ms)
            if query_type in INSERT_TYPES:
                series.rows += rows
            if used_index is True:
                series.index_used += 1
            elif used_index is False:
                series.full_scans += 1
            if duration_ms >= self.slow_query_threshold_ms:
                self._slow_total += 1
                self.slow_query_log.append(
                    SlowQuery(
                        utcnow(),
                        query_type,
                        table or OTHER_TABLE,
                        duration_ms,
                        statement if statement is not None else f"{query_type} {table}",
                    )
                )

    def _counters(self) -> _Counters:
        """Everything counted so far (call under the lock)."""
        return _Counters({key: s.snapshot() for key, s in self._series.items()}, self._slow_total)

    # -- collection --------------------------------------------------------------------

    async def collect_metrics(self) -> PerformanceMetrics:
        """The figures of the trailing window (``window_seconds``, up to a tenth more; since
        the start while the monitor is younger). Changes nothing another reader sees."""
        index_usage = await self._collect_index_usage()
        replication = await self.replication() if self.replication is not None else None
        self.last_replication = asdict(replication) if replication is not None else None
        with self._lock:
            now, timestamp = self._clock(), utcnow()
            started, earlier = self._window.start(now)
            current = self._counters()
        window = max(now - started, 1e-9)
        previous = (earlier or current).series

        overall = LatencyHistogram()
        by_table: dict[str, dict[str, dict[str, float | int]]] = {}
        inserted = errors = 0
        for (table, query_type), series in current.series.items():
            before = previous.get((table, query_type), _Series())
            delta = series.histogram.minus(before.histogram)
            rows = series.rows - before.rows
            errs = series.errors - before.errors
            if not delta.count and not errs:
                continue
            overall.merge(delta)
            inserted += rows if query_type in INSERT_TYPES else 0
            errors += errs
            by_table.setdefault(table, {})[query_type] = _summary(delta, rows, errs, window) | {
                "index_used": series.index_used - before.index_used,
                "full_scans": series.full_scans - before.full_scans,
            }
        totals = current.series.items()
        return PerformanceMetrics(
            timestamp=timestamp,
            window_seconds=round(window, 6),
            insert_rate=round(inserted / window, 2),
            query_rate=round(overall.count / window, 2),
            query_avg_time_ms=round(overall.mean_ms, 4),
            query_p50_time_ms=round(overall.percentile(50), 4),
            query_p95_time_ms=round(overall.percentile(95), 4),
            query_p99_time_ms=round(overall.percentile(99), 4),
            query_max_time_ms=round(overall.max_ms, 4),
            total_queries=sum(s.histogram.count for _, s in totals),
            total_rows_inserted=sum(s.rows for (_, qt), s in totals if qt in INSERT_TYPES),
            errors=errors,
            slow_queries=current.slow - (earlier or current).slow,
            by_table=by_table,
            index_usage=index_usage,
            connection_pool=self.pool_status(),
            replication=self.last_replication,
        )

    def pool_status(self) -> dict[str, Any]:
        if self._detach is None:
            return {}
        return pool_status(self._sync_engine.pool, self._pool_counters)

    def series(self) -> dict[tuple[str, str], tuple[LatencyHistogram, int, int]]:
        """Cumulative (histogram, rows, errors) per (table, query type), for exporters."""
        with self._lock:
            return {key: (s.histogram.copy(), s.rows, s.errors) for key, s in self._series.items()}

    @property
    def slow_queries_total(self) -> int:
        return self._slow_total

    async def _collect_index_usage(self) -> dict[str, Any]:
        engine = self._stats_engine()
        if engine is None:
            return {}
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{capture.INTERNAL: True})
            if engine.dialect.name == "postgresql":
                tables, indexes = await read_pg_stats(connection)
                window, figures = self._pg_usage.update(tables, indexes, self._clock())
                usage = {"engine": "postgresql", "window_seconds": window, "tables": figures}
            else:
                usage = {"engine": "sqlite", **await self._sqlite_usage(connection)}
            await connection.rollback()
        self.last_index_usage = usage
        return usage

    async def _sqlite_usage(self, connection: AsyncConnection) -> dict[str, Any]:
        await self._plans.refresh(connection)
        tables: dict[str, Any] = {}
        with self._lock:
            for (table, _), series in self._series.items():
                entry = tables.setdefault(table, {"index_searches": 0, "full_scans": 0})
                entry["index_searches"] += series.index_used
                entry["full_scans"] += series.full_scans
        for entry in tables.values():
            total = entry["index_searches"] + entry["full_scans"]
            entry["index_scan_share"] = round(entry["index_searches"] / total, 4) if total else None
        return {
            "tables": tables,
            "indexes_seen_in_plans": self._plans.indexes_seen(),
            "plans": len(self._plans.known()),
        }

    def _stats_engine(self) -> AsyncEngine | None:
        if self._engine is not None:
            return self._engine
        if self._detach is None:
            return None
        # A sync engine: read statistics through an async twin of its URL.
        if self._owned_engine is None:
            from tickvault.database.url import to_async_url

            self._owned_engine = create_async_engine(to_async_url(self._sync_engine.url))
        return self._owned_engine

    # -- analysis ----------------------------------------------------------------------

    async def analyze_table_performance(self, table_name: str) -> dict[str, Any]:
        """Rows, sizes, indexes (scans, unused, duplicated), latencies, recommendations."""
        engine = self._stats_engine()
        if engine is None:
            raise RuntimeError("analyze_table_performance needs an engine: call instrument()")
        with self._lock:
            mine = {qt: s for (table, qt), s in self._series.items() if table == table_name}
            latencies = {
                qt: _summary(s.histogram, s.rows, s.errors, self._uptime())
                for qt, s in mine.items()
            }
            executions = (
                sum(s.index_used for s in mine.values()),
                sum(s.full_scans for s in mine.values()),
            )
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{capture.INTERNAL: True})
            analysis = await analyze_table(
                connection,
                table_name,
                latencies=latencies,
                plans=self._plans.known(),
                executions=executions,
                slow_query_ms=self.slow_query_threshold_ms,
            )
            await connection.rollback()
        return analysis

    def _uptime(self) -> float:
        return max(self._clock() - self._started_at, 1e-9)

    # -- background loop ---------------------------------------------------------------

    async def start_monitoring(self, interval_seconds: float = 60) -> None:
        """Collect every ``interval_seconds`` in the background; returns at once."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._loop(interval_seconds), name="tickvault-monitor")

    async def stop_monitoring(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owned_engine is not None:
            await self._owned_engine.dispose()
            self._owned_engine = None

    @property
    def is_monitoring(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                self.history.append(await self.collect_metrics())
            except Exception:
                # One failed collection (database away, say) must not end monitoring.
                self.collection_failures += 1
                logger.exception("performance collection failed; retrying next interval")


def _summary(
    histogram: LatencyHistogram, rows: int, errors: int, window: float
) -> dict[str, float | int]:
    return {
        "count": histogram.count,
        "rows": rows,
        "errors": errors,
        "rate_per_second": round(histogram.count / window, 2),
        "avg_ms": round(histogram.mean_ms, 4),
        "p50_ms": round(histogram.percentile(50), 4),
        "p95_ms": round(histogram.percentile(95), 4),
        "p99_ms": round(histogram.percentile(99), 4),
        "max_ms": round(histogram.max_ms, 4),
    }


_monitor: DatabasePerformanceMonitor | None = None
_monitor_lock = threading.Lock()


def get_performance_monitor() -> DatabasePerformanceMonitor:
    """The process's monitor, created on first use."""
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            _monitor = DatabasePerformanceMonitor()
        return _monitor
