"""The benchmark's results for people (a table beside the original claims, a PNG chart) and
for machines (JSON)."""

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tickvault.bench.run import BASELINE, HEAD, INDEXES, REVISIONS, SOFT_DELETE

# What the original design claimed, without measuring: (before, after) in ms, or a speed-up.
CLAIMS = {
    "market_data": (2.5, 1.5),
    "alert_logs": (4.0, 2.0),
}
CLAIMED_CALCULATION_SPEEDUP = "2-3x faster"


def _ratio(after: float | None, before: float | None) -> str:
    if not after or not before:
        return "-"
    return f"{after / before:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"


def _ratios(values: list[float]) -> tuple[str, str, str]:
    """indexes / baseline, head / baseline, head / soft delete."""
    baseline, indexes, soft_delete, head = values
    return _ratio(indexes, baseline), _ratio(head, baseline), _ratio(head, soft_delete)


def claims_table(engine: str, results: dict[str, Any]) -> Table:
    """The original before/after claims beside the measured figures of one engine."""
    table = Table(
        title=f"{engine}: claimed vs measured (calculations: DECIMAL at baseline, FLOAT at head)"
    )
    for name in ("case", "claimed", f"baseline {BASELINE}", f"indexes {INDEXES}",
                 f"soft delete {SOFT_DELETE}", f"head {HEAD}", "indexes/baseline",
                 "head/baseline", "head/soft delete"):  # fmt: skip
        table.add_column(
            name, justify="left" if name in ("case", "claimed") else "right", no_wrap=True
        )
    inserts = results["insert"]
    for name, (before, after) in CLAIMS.items():
        figures = inserts[name]
        for metric, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            claimed = (
                f"{before} -> {after} ms ({after / before:.2f}x)" if metric == "p50_ms" else ""
            )
            values = [figures[r][metric] for r in REVISIONS]
            table.add_row(
                f"{name} insert+commit {label} ms", claimed, *map(_ms, values), *_ratios(values)
            )  # fmt: skip
    for name in CLAIMS:
        values = [inserts[name][r]["bulk_rows_per_second"] for r in REVISIONS]
        table.add_row(
            f"{name} bulk, rows/s", "", *(f"{v:,.0f}" for v in values), *_ratios(values)
        )  # fmt: skip
    for name, figures in results["read"].items():
        values = [figures[r] for r in REVISIONS]
        table.add_row(f"{name}, ms", "not measured", *map(_ms, values), *_ratios(values))
    calculation = results["calculation"]
    for where, key in (("SQL", "sql_ms"), ("Python", "python_ms")):
        decimal, floating = calculation[key]["DECIMAL"], calculation[key]["FLOAT"]
        table.add_row(
            f"avg+stddev+VWAP in {where} ms", CLAIMED_CALCULATION_SPEEDUP,
            _ms(decimal), "", "", _ms(floating), "", _ratio(floating, decimal), "",
        )  # fmt: skip
    return table


def load_table(engine: str, results: dict[str, Any]) -> Table:
    table = Table(title=f"{engine}: concurrent single-tick writers (head)")
    for name in ("path", "writers", "ticks/s", "p50 ms", "p99 ms", "acknowledged = stored",
                 "errors", "'database is locked'"):  # fmt: skip
        table.add_column(name, justify="left" if name == "path" else "right", no_wrap=True)
    for path in ("service", "http"):
        for row in results["load"][path]:
            table.add_row(
                "MarketDataService" if path == "service" else "HTTP API",
                str(row["writers"]), f"{row['ticks_per_second']:,.0f}",
                _ms(row.get("p50_ms")), _ms(row.get("p99_ms")),
                f"{row['acknowledged']:,} = {row['stored']:,}" if row["all_acknowledged_stored"]
                else f"{row['acknowledged']:,} != {row['stored']:,}",
                str(row["errors"]), str(row["database_locked_errors"]),
            )  # fmt: skip
    return table


def live_table(engine: str, results: dict[str, Any]) -> Table:
    """The live path against its yardsticks, measured in the same run."""
    load = results["load"]
    table = Table(title=f"{engine}: the live write path against its yardsticks (same run)")
    for name in ("case", "measured", "yardstick", "ratio", "acknowledged = stored"):
        table.add_column(name, justify="left" if name == "case" else "right", no_wrap=True)
    single = load["single"]
    table.add_row(
        "one producer, p50 ms (vs ORM add + commit)", _ms(single["live"]["p50_ms"]),
        _ms(single["orm"]["p50_ms"]), f"{single['p50_ratio']:.2f}x", "",
    )  # fmt: skip
    for figures in load["stream"]:
        table.add_row(
            f"WebSocket, {figures['ticks_per_message']} a message, ticks/s (vs bulk ingest)",
            f"{figures['ticks_per_second']:,.0f}", f"{load['bulk_rows_per_second']:,.0f}",
            f"{figures['ratio_to_bulk']:.2f}x", _stored(figures),
        )  # fmt: skip
    http = load["http_vs_bare"]
    if "skipped" in http:
        table.add_row("HTTP, one tick a request (wrk)", "skipped", http["skipped"], "", "")
    else:
        table.add_row(
            f"HTTP, one tick a request, wrk -c{http['connections']}, req/s (vs bare FastAPI)",
            f"{http['tickvault_requests_per_second']:,.0f}",
            f"{http['bare_requests_per_second']:,.0f}", f"{http['ratio']:.2f}x", _stored(http),
        )  # fmt: skip
    return table


def _stored(figures: dict[str, Any]) -> str:
    mark = "=" if figures["all_acknowledged_stored"] else "!="
    return f"{figures['acknowledged']:,} {mark} {figures['stored']:,}"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """Head / baseline time ratios per case and engine, with the claims marked; False when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    engines = {k: v for k, v in results["engines"].items() if "skipped" not in v}
    figure, axes = plt.subplots(1, len(engines), figsize=(8 * len(engines), 6), squeeze=False)
    for axis, (engine, figures) in zip(axes[0], engines.items(), strict=True):
        labels: list[str] = []
        ratios: list[float] = []
        claimed: list[float | None] = []
        for name, (before, after) in CLAIMS.items():
            insert = figures["insert"][name]
            labels.append(f"{name} insert p50 (df856072bded / baseline)")
            ratios.append(insert[INDEXES]["p50_ms"] / insert[BASELINE]["p50_ms"])
            claimed.append(after / before)
        for name, read in figures["read"].items():
            labels.append(f"{name} (head / baseline)")
            ratios.append(read[HEAD] / read[BASELINE])
            claimed.append(None)
        for where, key in (("SQL", "sql_ms"), ("Python", "python_ms")):
            calc = figures["calculation"][key]
            labels.append(f"calculation in {where} (FLOAT / DECIMAL)")
            ratios.append(calc["FLOAT"] / calc["DECIMAL"])
            claimed.append(1 / 2.5)
        positions = range(len(labels))
        # Bars grow from 1 (no change): left for faster, right for slower.
        widths = [r - 1.0 for r in ratios]
        axis.barh(positions, widths, left=1.0, color="#4477aa", label="measured")
        for y, value in zip(positions, claimed, strict=True):
            if value is not None:
                axis.plot(value, y, "o", color="#cc3311", label="claimed")
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_xscale("log")  # from a third to thousands: only a log scale shows both
        axis.set_yticks(list(positions), labels)
        axis.invert_yaxis()
        axis.set_xlabel("time after / time before (< 1 is faster; log scale)")
        axis.set_title(engine)
        handles, names = axis.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
