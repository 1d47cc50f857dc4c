"""/performance/metrics, /performance/tables/{table}, /metrics (Prometheus), /health."""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import DBAPIError

from tickvault.api.responses import COMMON, NOT_FOUND
from tickvault.api.runtime import RuntimeDep
from tickvault.api.schemas import Health, ReplicaHealth, round4
from tickvault.api.security import READ
from tickvault.monitoring.metrics import iso_utc
from tickvault.monitoring.prometheus import render
from tickvault.services import schema

router = APIRouter(tags=["performance"], responses=COMMON)


@router.get("/performance/metrics", dependencies=READ)
async def performance_metrics(runtime: RuntimeDep) -> dict[str, Any]:
    """Statement counts, rates and latency percentiles per type and table, index usage, the
    connection pool: over the trailing TICKVAULT_MONITOR_INTERVAL_SECONDS (the same for every
    caller: reading resets nothing), and totals since start."""
    metrics = await runtime.monitor.collect_metrics()
    return round4(metrics.to_dict())  # type: ignore[no-any-return]


@router.get("/performance/slow-queries", dependencies=READ)
async def slow_queries(runtime: RuntimeDep) -> list[dict[str, Any]]:
    """The latest statements slower than TICKVAULT_SLOW_QUERY_THRESHOLD_MS, newest first
    (statement text only: parameter values are never kept)."""
    log = list(runtime.monitor.slow_query_log)
    return [round4({**asdict(q), "timestamp": iso_utc(q.timestamp)}) for q in reversed(log)]


@router.get("/performance/tables/{table}", dependencies=READ, responses=NOT_FOUND)
async def table_performance(
    table: Annotated[str, Path(max_length=128, description="A table in the database.")],
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """Rows, sizes, indexes and how they are used, latencies, recommendations."""
    return round4(await runtime.monitor.analyze_table_performance(table))  # type: ignore[no-any-return]


@router.get(
    "/metrics",
    dependencies=READ,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """The monitor's figures in Prometheus' text format."""
    return Response(render(runtime.monitor), media_type=CONTENT_TYPE_LATEST)


@router.get("/health", responses={503: {"model": Health}})
async def health(runtime: RuntimeDep) -> Health:
    """Is the database reachable, and at which revision (vs the code's head)? With a read
    replica, its state and replication lag."""
    head = schema.head_revision()
    try:
        revision = await schema.read_revision(runtime.engine)
    except (DBAPIError, OSError) as exc:
        body = Health(
            status="unavailable",
            database="unreachable",
            revision=None,
            head=head,
            detail=str(getattr(exc, "orig", None) or exc).strip().splitlines()[0],
        )
        return JSONResponse(  # type: ignore[return-value]
            body.model_dump(), status_code=503, headers={"Retry-After": "1"}
        )
    replication = await runtime.reads.replication(runtime.engine) if runtime.reads else None
    replica = ReplicaHealth(**asdict(replication)) if replication is not None else None
    detail = None
    if revision != head:
        detail = (
            f"database at {revision or 'no revision'}, code at {head}: run tickvault db upgrade"
        )
    elif runtime.market_data.writer.down is not None:
        detail = f"the tick writer cannot reach the database: {runtime.market_data.writer.down}"
    elif runtime.feed is not None and not runtime.feed.flowing:
        detail = "the simulated feed is not flowing" + (
            f": {runtime.feed.stats.last_error}" if runtime.feed.stats.last_error else ""
        )
    elif replica is not None and replica.state != "streaming":
        detail = f"the read replica is {replica.state}: reads go to the primary"
    if detail is not None:
        return Health(
            status="degraded",
            database="reachable",
            revision=revision,
            head=head,
            detail=detail,
            replica=replica,
        )
    return Health(status="ok", database="reachable", revision=revision, head=head, replica=replica)
