"""What the monitor reports: one tracked statement, one slow query, one collection."""

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tickvault.database.types import utcnow


@dataclass(frozen=True)
class QueryPerformance:
    """One tracked statement."""

    query_type: str
    table_name: str | None
    execution_time_ms: float
    used_index: bool | None = None
    rows: int = 1
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SlowQuery:
    timestamp: datetime
    query_type: str
    table_name: str
    execution_time_ms: float
    statement: str  # the text only: parameter values are never kept


@dataclass
class PerformanceMetrics:
    """One collection: rates and latencies over ``window_seconds``, totals since start."""

    timestamp: datetime
    window_seconds: float
    insert_rate: float
    query_rate: float
    query_avg_time_ms: float
    query_p50_time_ms: float
    query_p95_time_ms: float
    query_p99_time_ms: float
    query_max_time_ms: float
    total_queries: int
    total_rows_inserted: int
    errors: int
    slow_queries: int
    by_table: dict[str, dict[str, dict[str, float | int]]]
    index_usage: dict[str, Any]
    connection_pool: dict[str, Any]
    # The read replica's state and lag (tickvault.database.replica); None without one.
    replication: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = iso_utc(self.timestamp)
        if self.replication is None:
            del data["replication"]
        return data


def iso_utc(value: datetime) -> str:
    """``2024-05-06T13:30:00.250000Z``: UTC written as the rest of the API writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
