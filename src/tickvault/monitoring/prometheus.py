"""The monitor's figures in Prometheus' text format, via prometheus_client.

Read at scrape time from the monitor's own counters (nothing is counted twice). Base units
(seconds, bytes), ``_total`` counters, a latency histogram with sub-millisecond buckets;
label values are bounded: tables the monitor keeps apart (at most 64, then "other") and
the fixed query types.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tickvault.monitoring.histogram import PROMETHEUS_BUCKETS_S

if TYPE_CHECKING:
    from tickvault.services.database_performance import DatabasePerformanceMonitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MonitorCollector(Collector):
    def __init__(self, monitor: "DatabasePerformanceMonitor") -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        series = self.monitor.series()
        queries = CounterMetricFamily(
            "tickvault_queries", "Statements executed.", labels=["table", "type"]
        )
        errors = CounterMetricFamily(
            "tickvault_query_errors", "Statements that failed.", labels=["table", "type"]
        )
        rows = CounterMetricFamily(
            "tickvault_rows_inserted", "Rows written by INSERT and COPY.", labels=["table"]
        )
        duration = HistogramMetricFamily(
            "tickvault_query_duration_seconds",
            "Statement execution time.",
            labels=["table", "type"],
        )
        inserted: dict[str, int] = {}
        for (table, query_type), (histogram, row_count, error_count) in sorted(series.items()):
            queries.add_metric([table, query_type], histogram.count)
            errors.add_metric([table, query_type], error_count)
            if query_type in ("INSERT", "COPY"):
                inserted[table] = inserted.get(table, 0) + row_count
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*(str(b) for b in PROMETHEUS_BUCKETS_S), "+Inf"),
                histogram.prometheus,
                strict=True,
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([table, query_type], buckets, histogram.total_ms / 1000)
        for table, count in sorted(inserted.items()):
            rows.add_metric([table], count)
        yield from (queries, errors, rows, duration)
        yield CounterMetricFamily(
            "tickvault_slow_queries",
            "Statements slower than the slow-query threshold.",
            value=self.monitor.slow_queries_total,
        )
        yield CounterMetricFamily(
            "tickvault_monitor_collection_failures",
            "Collections that failed.",
            value=self.monitor.collection_failures,
        )
        yield from _pool_metrics(self.monitor.pool_status())
        yield from _index_metrics(self.monitor.last_index_usage)
        yield from _replica_metrics(self.monitor.last_replication)


def _replica_metrics(replication: dict[str, Any] | None) -> Iterator[Metric]:
    """The read replica as of the last collection (nothing without one)."""
    if replication is None:
        return
    streaming = replication["state"] == "streaming"
    yield GaugeMetricFamily(
        "tickvault_replica_up", "1 while the read replica streams, else 0.", value=int(streaming)
    )
    if streaming:
        yield GaugeMetricFamily(
            "tickvault_replica_lag_bytes",
            "The primary's WAL the replica has not replayed.",
            value=replication["lag_bytes"],
        )
        yield GaugeMetricFamily(
            "tickvault_replica_lag_seconds",
            "Since the last transaction the replica replayed, while WAL waits for replay.",
            value=replication["lag_seconds"],
        )


def _pool_metrics(status: dict[str, object]) -> Iterator[Metric]:
    gauges = {
        "size": "Pool size.",
        "checked_out": "Connections lent out.",
        "checked_in": "Idle connections in the pool.",
        "overflow": "Connections beyond the pool size.",
    }
    for key, doc in gauges.items():
        value = status.get(key)
        if isinstance(value, int):
            yield GaugeMetricFamily(f"tickvault_pool_{key}", doc, value=value)
    for key in ("connects", "checkouts", "invalidations"):
        value = status.get(key)
        if isinstance(value, int):
            yield CounterMetricFamily(
                f"tickvault_pool_{key}", f"Pool {key} since start.", value=value
            )


def _index_metrics(usage: dict[str, object]) -> Iterator[Metric]:
    tables = usage.get("tables")
    if usage.get("engine") != "postgresql" or not isinstance(tables, dict):
        return
    scans = CounterMetricFamily(
        "tickvault_index_scans", "Index scans (PostgreSQL statistics).", labels=["table", "index"]
    )
    size = GaugeMetricFamily("tickvault_index_size_bytes", "Index size.", labels=["table", "index"])
    for table, entry in sorted(tables.items()):
        for index, figures in sorted(entry.get("indexes", {}).items()):
            scans.add_metric([table, index], figures["scans_total"])
            size.add_metric([table, index], figures["size_bytes"])
    yield from (scans, size)


def render(monitor: "DatabasePerformanceMonitor") -> bytes:
    """The text exposition of ``monitor``'s figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    return generate_latest(registry)
