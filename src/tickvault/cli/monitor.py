"""``tickvault monitor`` (a live view of a running service) and ``tickvault analyze TABLE``."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table

from tickvault.cli._common import DatabaseUrl, console, friendly_errors, opened
from tickvault.errors import ConfigurationError
from tickvault.services.database_performance import DatabasePerformanceMonitor
from tickvault.settings import get_settings

ApiUrl = Annotated[
    str,
    typer.Option(
        "--api-url", envvar="TICKVAULT_API_URL", help="The running service (tickvault serve)."
    ),
]


def fetch(api_url: str, path: str) -> Any:
    request = urllib.request.Request(api_url.rstrip("/") + path)
    key = get_settings().api_key
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {api_url}{path}: {exc}") from None


def _ms(value: Any) -> str:
    """Milliseconds in at most six characters or so: 0.25, 81.39, 812.4, 8,124."""
    if value is None:
        return "-"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(metrics: dict[str, Any], slow: list[dict[str, Any]]) -> Group:
    """One frame: rates, latencies per table and statement type, slow queries, pool, indexes."""
    summary = (
        f"window {metrics['window_seconds']:.1f} s   "
        f"inserts {metrics['insert_rate']:,.1f} rows/s   "
        f"queries {metrics['query_rate']:,.1f}/s\n"
        f"p50 {_ms(metrics['query_p50_time_ms'])} ms   "
        f"p95 {_ms(metrics['query_p95_time_ms'])} ms   "
        f"p99 {_ms(metrics['query_p99_time_ms'])} ms   "
        f"errors {metrics['errors']}"
    )
    # Light borders and short headers: the whole table fits 80 columns.
    tables = Table(
        title="statements (this window; times in ms)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for name in ("table", "type", "count", "rows", "per s", "p50", "p95", "p99", "max"):
        tables.add_column(
            name, justify="left" if name in ("table", "type") else "right", no_wrap=True
        )
    for table, kinds in sorted(metrics["by_table"].items()):
        for kind, s in sorted(kinds.items()):
            tables.add_row(
                table, kind, f"{s['count']:,}", f"{s['rows']:,}", _rate(s["rate_per_second"]),
                _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"]), _ms(s["max_ms"]),
            )  # fmt: skip
    pool = metrics["connection_pool"]
    pool_line = (
        f"pool: {pool.get('checked_out', '-')} checked out of {pool.get('size', '-')}"
        f" (+{pool.get('max_overflow', '-')} overflow), connects {pool.get('connects', '-')}"
        f", invalidations {pool.get('invalidations', '-')}"
    )
    replica = metrics.get("replication")
    if replica is not None:
        pool_line += f"\nreplica: {replica['state']}"
        if replica["state"] == "streaming":
            pool_line += (
                f", {replica['lag_bytes']:,} bytes and {replica['lag_seconds']:.1f} s behind"
            )
    usage = Table(title="index usage", expand=True, box=box.SIMPLE_HEAD, padding=(0, 1))
    for name in ("table", "index scans", "full scans", "index share"):
        usage.add_column(name, justify="left" if name == "table" else "right")
    for table, figures in sorted(metrics["index_usage"].get("tables", {}).items()):
        share = figures.get("index_scan_share")
        usage.add_row(
            table,
            f"{figures.get('index_searches', figures.get('index_scans', 0)):,}",
            f"{figures.get('full_scans', figures.get('seq_scans', 0)):,}",
            "-" if share is None else f"{share:.0%}",
        )
    slow_table = Table(
        title=f"slow queries (last {len(slow[:5])})",
        expand=True,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    for name in ("when", "table", "type", "ms", "statement"):
        slow_table.add_column(name, overflow="ellipsis", no_wrap=name == "statement")
    for q in slow[:5]:
        slow_table.add_row(
            q["timestamp"][11:19], q["table_name"], q["query_type"],
            _ms(q["execution_time_ms"]), q["statement"],
        )  # fmt: skip
    return Group(summary, tables, usage, pool_line, slow_table)


def monitor(
    api_url: ApiUrl = "http://127.0.0.1:8000",
    interval: Annotated[float, typer.Option(help="Seconds between updates.", min=0.2)] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one view and exit.")] = False,
) -> None:
    """A live view of a running service: rates, latencies, slow queries, pool, indexes.

    Reads the service's /performance endpoints: the service's own monitor sees every
    statement it runs, which another process could not.
    """

    def frame() -> Group:
        return render(
            fetch(api_url, "/performance/metrics"), fetch(api_url, "/performance/slow-queries")
        )

    out = console()
    if once:
        out.print(frame())
        return
    try:
        with Live(frame(), console=out, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(frame())
    except KeyboardInterrupt:
        pass


def analyze(
    table: Annotated[str, typer.Argument(help="A table in the database.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rows, sizes, indexes (and which are unused or duplicates) and recommendations for TABLE.

    Index scans come from PostgreSQL's statistics; SQLite keeps none, so there the figures
    cover only what this command ran: use a running service's /performance/tables/TABLE.
    """

    async def run() -> dict[str, Any]:
        # Any table of any database: neither tickvault's schema nor writes are needed.
        async with opened(database_url, migrated=False, writes=False) as (engine, _):
            watcher = DatabasePerformanceMonitor(engine)
            try:
                return await watcher.analyze_table_performance(table)
            finally:
                watcher.uninstrument()

    result = asyncio.run(run())
    out = console()
    if as_json:
        out.print_json(json.dumps(result, default=str))
        return
    rows = f"{result['rows']:,}" if "rows" in result else f"~{result['rows_estimate']:,}"
    out.print(
        f"[bold]{result['table']}[/bold] ({result['engine']}): {rows} rows, "
        f"table {_bytes(result.get('table_bytes'))}, indexes {_bytes(result.get('index_bytes'))}"
    )
    indexes = Table(expand=True)
    for name in ("index", "columns", "scans", "size", "note"):
        indexes.add_column(name)
    for name, info in sorted(result["indexes"].items()):
        scans = info.get("scans", info.get("plans_using"))
        note = []
        if info.get("unused"):
            note.append("unused")
        if info.get("duplicate_of"):
            note.append(f"prefix of {info['duplicate_of']}")
        indexes.add_row(
            name, ", ".join(info.get("columns", [])), "-" if scans is None else f"{scans:,}",
            _bytes(info.get("size_bytes")), "; ".join(note),
        )  # fmt: skip
    out.print(indexes)
    if result["engine"] == "sqlite":
        out.print(
            "SQLite keeps no index statistics: scans here are plans of what this command ran; "
            "a running service's /performance/tables/" + table + " has live figures."
        )
    for line in result.get("recommendations", []):
        out.print(f"- {line}")


def _bytes(value: Any) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


def register(app: typer.Typer) -> None:
    app.command()(friendly_errors(monitor))
    app.command()(friendly_errors(analyze))
