"""The HTTP API's factory.

::

    app = create_app()                         # TICKVAULT_DATABASE_URL, TICKVAULT_API_KEY, …
    app = create_app("postgresql://…/db", simulate_rate=50)
    uvicorn.run(app)

OpenAPI at /openapi.json, browsable at /docs and /redoc (no CDN needed). The app opens its
engine, starts its performance monitor (and the simulated feed, if asked) when it starts,
and closes them when it stops.
"""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from tickvault import __version__
from tickvault.api import errors
from tickvault.api.routes import alerts, instruments, market_data, performance, stream
from tickvault.api.runtime import Runtime
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.replica import ReadSessions
from tickvault.services.alerts import AlertService
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.services.market_data import MarketDataService
from tickvault.services.simulator import FeedSimulator
from tickvault.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def create_app(
    database_url: str | None = None,
    *,
    settings: Settings | None = None,
    simulate_rate: float | None = None,
    gc_freeze: bool = False,
) -> FastAPI:
    """The API over the database at ``database_url`` (default: the settings' URL).

    ``simulate_rate``: ticks per second of a simulated feed to run while the app is up.
    ``gc_freeze``: once started, move every object that exists then (the libraries, the
    app) out of the garbage collector's way (``gc.freeze()``), so that its full collections
    scan only what requests make (``tickvault serve`` does: with a stream's ticks queued,
    full collections come often).
    """
    settings = settings or get_settings()
    url = database_url or settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url)
        session_factory = create_session_factory(engine)
        monitor = DatabasePerformanceMonitor(
            engine, window_seconds=settings.monitor_interval_seconds
        )
        service = MarketDataService(
            session_factory,
            alerts=AlertService(session_factory),
            queue_capacity=settings.write_queue_ticks,
        )
        simulator = FeedSimulator(service, rate=simulate_rate) if simulate_rate else None
        reads = ReadSessions(session_factory, settings.read_replica_url)
        monitor.replication = partial(reads.replication, engine)
        if reads.replica_engine is not None:
            monitor.observe(reads.replica_engine)
        app.state.runtime = Runtime(
            settings, engine, session_factory, monitor, service, simulator, reads
        )
        await monitor.start_monitoring(settings.monitor_interval_seconds)
        feed = None
        if simulator is not None:
            feed = asyncio.create_task(simulator.run(), name="tickvault-feed")
            feed.add_done_callback(_report_feed_end)
        if gc_freeze:
            gc.freeze()
        try:
            yield
        finally:
            if gc_freeze:
                gc.unfreeze()
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed
            # Every tick queued by a request that was answered, or is waiting, is written.
            await service.aclose()
            await monitor.stop_monitoring()
            monitor.uninstrument()
            await reads.aclose()
            await engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the copies fastapi-offline ships, served
    # here, not from a CDN: they work on a network without the internet. Swagger UI's
    # validator badge would call validator.swagger.io; it is off.
    app = FastAPIOffline(
        title="tickvault",
        version=__version__,
        summary="Market data and alert logs on SQLite and PostgreSQL.",
        lifespan=lifespan,
        max_body_size=int(settings.api_max_body_mb * 1024 * 1024),
        swagger_ui_parameters={"validatorUrl": None},
    )
    errors.install(app)
    for router in (
        instruments.router,
        market_data.router,
        stream.router,
        alerts.rules,
        alerts.logs,
        performance.router,
    ):
        app.include_router(router)
    return app


def _report_feed_end(task: "asyncio.Task[object]") -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("simulated feed stopped: %s", task.exception())
