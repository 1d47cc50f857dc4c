"""``tickvault serve``, ``seed`` and ``simulate``: the live service and its demo feed."""

import asyncio
import contextlib
import time
from typing import Annotated

import typer

from tickvault.cli._common import DatabaseUrl, console, friendly_errors, opened, resolve_url
from tickvault.database.url import display_url
from tickvault.errors import ConfigurationError
from tickvault.services import schema
from tickvault.services.alerts import AlertService
from tickvault.services.demo import seed_demo
from tickvault.services.market_data import MarketDataService
from tickvault.services.simulator import FeedSimulator
from tickvault.settings import get_settings

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
Rate = Annotated[float, typer.Option(help="Simulated ticks per second.", min=0.001, max=100_000)]


def require_head(url: str) -> None:
    """Refuse to serve a database the code does not match."""
    revision, head = schema.current_revision(url), schema.head_revision()
    if revision != head:
        raise ConfigurationError(
            f"database at revision {revision or 'none (empty)'}, code at {head}: "
            "run `tickvault db upgrade` first"
        )


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Run a simulated market feed too.")
    ] = False,
    rate: Rate = 50.0,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log every request (off by default: at market speed a log line costs more "
            "than storing the tick).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs), optionally with a simulated feed."""
    import uvicorn

    from tickvault.api import create_app

    settings = get_settings()
    url = resolve_url(database_url)
    if settings.api_key is None and host not in LOOPBACK:
        raise ConfigurationError(
            f"refusing to listen on {host} without TICKVAULT_API_KEY: set a key, "
            "or listen on 127.0.0.1"
        )
    require_head(url)
    out = console()
    if settings.api_key is None:
        out.print("no TICKVAULT_API_KEY set: writes are open, so listening on 127.0.0.1 only")
    out.print(f"database {display_url(url)}")
    out.print(
        f"API on http://{host}:{port}  (docs: /docs, metrics: /performance/metrics, /metrics)"
    )
    if simulate:
        out.print(f"simulated feed: {rate:g} ticks/s")
    app = create_app(url, simulate_rate=rate if simulate else None, gc_freeze=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)


def seed(database_url: DatabaseUrl = None) -> None:
    """Add the demo instruments and alert rules (what is missing; safe to run again)."""

    async def run() -> None:
        async with opened(database_url) as (_, session_factory):
            report = await seed_demo(session_factory)
        if report.instruments:
            console().print(
                f"demo data: added {report.instruments} instruments and {report.rules} alert rules"
            )
        else:
            console().print("demo data: already there")

    asyncio.run(run())


def simulate(
    rate: Rate = 50.0,
    instruments: Annotated[
        int | None, typer.Option(help="Feed the first N active instruments (default: all).", min=1)
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).", min=0.1)
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Feed random-walk ticks through the ingestion service, alert rules included."""
    out = console()

    async def run() -> None:
        async with opened(database_url) as (_, session_factory):
            service = MarketDataService(session_factory, alerts=AlertService(session_factory))
            feed = FeedSimulator(service, rate=rate, instruments=instruments)
            started = time.perf_counter()
            task = asyncio.create_task(feed.run(duration))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=5)
                    elapsed = time.perf_counter() - started
                    out.print(
                        f"{elapsed:6.1f} s  ticks {feed.stats.ticks:,} "
                        f"({feed.stats.ticks / elapsed:,.1f}/s)  alert logs {feed.stats.alerts:,}"
                        f"  rejected {feed.stats.rejected:,}"
                    )
                await task
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await service.aclose()  # what was queued is committed before exiting

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        out.print("stopped")


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(serve))
    app.command()(friendly_errors(seed))
    app.command()(friendly_errors(simulate))
