"""`tickvault bench --quick` end to end: every case measured, the load's acknowledged writes
all stored, no "database is locked", JSON and chart written, and the printed tables showing
the figures of the JSON. On SQLite alone (always) and on both engines (with PostgreSQL)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import postgres_admin_url
from tickvault.cli import app

REVISIONS = ("4524473b46fb", "df856072bded", "f79e2702f75c", "c2f8d4b6e913")
CLAIMED_P50 = {"market_data": "2.5 -> 1.5 ms (0.60x)", "alert_logs": "4.0 -> 2.0 ms (0.50x)"}


def run_bench(tmp_path: Path, *options: str) -> tuple[str, dict[str, Any]]:
    result = CliRunner().invoke(app, ["bench", "--quick", "--output", str(tmp_path), *options])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return result.stdout, json.loads((tmp_path / "bench.json").read_text())


def printed_rows(stdout: str, engine: str) -> dict[str, list[str]]:
    """The cells of ``engine``'s claimed-vs-measured table, by case."""
    section = stdout.split(f"{engine}: claimed vs measured", 1)[1]
    section = section.split(f"{engine}: concurrent", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def ratios(values: list[float]) -> list[str]:
    baseline, indexes, soft_delete, head = values
    return [f"{indexes / baseline:.2f}x", f"{head / baseline:.2f}x", f"{head / soft_delete:.2f}x"]


def check_engine(stdout: str, engine: str, figures: dict[str, Any]) -> None:
    rows = printed_rows(stdout, engine)
    for table, claimed in CLAIMED_P50.items():
        inserts = figures["insert"][table]
        for revision in REVISIONS:
            assert inserts[revision]["p50_ms"] <= inserts[revision]["p99_ms"], (engine, table)
        for metric, label, claim in (("p50_ms", "p50", claimed), ("p99_ms", "p99", "")):
            values = [inserts[r][metric] for r in REVISIONS]
            assert rows[f"{table} insert+commit {label} ms"] == [
                claim,
                *(f"{v:,.3f}" for v in values),
                *ratios(values),
            ], (engine, table, label)
        bulk = [inserts[r]["bulk_rows_per_second"] for r in REVISIONS]
        assert rows[f"{table} bulk, rows/s"] == ["", *(f"{v:,.0f}" for v in bulk), *ratios(bulk)]
    for name, read in figures["read"].items():
        values = [read[r] for r in REVISIONS]
        assert rows[f"{name}, ms"] == [
            "not measured",
            *(f"{v:,.3f}" for v in values),
            *ratios(values),
        ], (engine, name)
    for where, key in (("SQL", "sql_ms"), ("Python", "python_ms")):
        decimal, floating = (figures["calculation"][key][t] for t in ("DECIMAL", "FLOAT"))
        assert rows[f"avg+stddev+VWAP in {where} ms"] == [
            "2-3x faster",
            f"{decimal:,.3f}",
            "",
            "",
            f"{floating:,.3f}",
            "",
            f"{floating / decimal:.2f}x",
            "",
        ], (engine, where)

    load = figures["load"]
    for path in ("service", "http"):
        runs = load[path]
        assert [r["writers"] for r in runs] == [1, 4]
        for run in runs:
            # A run that acknowledged nothing would make "all stored" vacuous.
            assert run["acknowledged"] > 0, (engine, path, run)
            assert run["stored"] == run["acknowledged"], (engine, path, run)
            assert run["database_locked_errors"] == 0, (engine, path, run)
    assert [s["ticks_per_message"] for s in load["stream"]] == [100, 1]
    for stream in load["stream"]:
        assert stream["acknowledged"] > 0, (engine, stream)
        assert stream["stored"] == stream["acknowledged"], (engine, stream)
        assert stream["in_order"], (engine, stream)
        assert stream["errors"] == 0, (engine, stream)
    assert load["single"]["live"]["p50_ms"] <= load["single"]["live"]["p99_ms"]
    http = load["http_vs_bare"]
    if shutil.which("wrk") is None:
        assert http == {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
    else:
        assert http["acknowledged"] > 0, (engine, http)
        assert http["all_acknowledged_stored"], (engine, http)
        assert http["errors"] == 0, (engine, http)


def test_quick_bench_on_sqlite_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKVAULT_BENCH_POSTGRES_URL", raising=False)
    stdout, results = run_bench(tmp_path)
    assert "PostgreSQL skipped: no --postgres-url" in stdout
    assert results["engines"]["postgresql"] == {
        "skipped": "no PostgreSQL server given (--postgres-url)"
    }
    assert "postgresql: skipped (no PostgreSQL server given (--postgres-url))" in stdout
    check_engine(stdout, "sqlite", results["engines"]["sqlite"])


def test_quick_bench_on_both_engines(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, "--postgres-url", postgres_admin_url())
    assert set(results["engines"]) == {"sqlite", "postgresql"}
    for engine, figures in results["engines"].items():
        check_engine(stdout, engine, figures)
    assert results["engines"]["postgresql"]["server"].startswith("PostgreSQL")
