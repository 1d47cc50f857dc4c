"""`tickvault monitor`'s view fits an 80-column terminal: no header or figure cut short."""

from typing import Any

from rich.console import Console

from tickvault.cli.monitor import render

BUSY = {"count": 123_456, "rows": 12_345_678, "rate_per_second": 12_345.6,
        "p50_ms": 1.25, "p95_ms": 812.44, "p99_ms": 8_124.5, "max_ms": 98_765.4}  # fmt: skip


def metrics() -> dict[str, Any]:
    return {
        "window_seconds": 10.0,
        "insert_rate": 123_456.7,
        "query_rate": 12_345.6,
        "query_p50_time_ms": 1.25,
        "query_p95_time_ms": 812.44,
        "query_p99_time_ms": 8_124.5,
        "errors": 3,
        "by_table": {
            "market_data": {"INSERT": BUSY, "SELECT": BUSY},
            "alert_logs": {"UPDATE": BUSY},
            "write_receipts": {"INSERT": BUSY},
        },
        "connection_pool": {
            "checked_out": 2,
            "size": 5,
            "max_overflow": 10,
            "connects": 9,
            "invalidations": 0,
        },
        "index_usage": {
            "tables": {
                "market_data": {
                    "index_scans": 12_345_678,
                    "seq_scans": 12,
                    "index_scan_share": 0.99,
                }
            }
        },
    }


def test_the_view_fits_80_columns() -> None:
    console = Console(width=80, record=True, force_terminal=False)
    console.print(render(metrics(), []))
    text = console.export_text()
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
    header = next(line for line in text.splitlines() if line.startswith("table "))
    assert header.split() == ["table", "type", "count", "rows", "per", "s", "p50", "p95", "p99",
                              "max"]  # fmt: skip
    for figure in ("write_receipts", "12,345,678", "123,456", "12,346", "812.4", "8,124",
                   "98,765", "1.25"):  # fmt: skip
        assert figure in text, figure


def test_the_view_shows_the_replicas_lag_when_there_is_one() -> None:
    console = Console(width=80, record=True, force_terminal=False)
    console.print(render(metrics(), []))
    assert "replica" not in console.export_text()
    lagging = {"state": "streaming", "lag_bytes": 1_234_567, "lag_seconds": 2.25}
    console.print(render({**metrics(), "replication": lagging}, []))
    assert "replica: streaming, 1,234,567 bytes and 2.2 s behind" in console.export_text()
    console.print(render({**metrics(), "replication": {"state": "unreachable"}}, []))
    assert "replica: unreachable\n" in console.export_text()
