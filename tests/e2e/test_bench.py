"""`tickvault bench --quick` end to end on SQLite and PostgreSQL: every case measured, the
load's acknowledged writes all stored, no "database is locked", JSON and chart written."""

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import postgres_admin_url
from tickvault.cli import app

REVISIONS = ("4524473b46fb", "df856072bded", "f79e2702f75c", "c2f8d4b6e913")


def test_quick_bench_measures_every_case_on_both_engines(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "--quick", "--postgres-url", postgres_admin_url(), "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "claimed vs measured" in result.stdout
    assert "2.5 -> 1.5 ms (0.60x)" in result.stdout
    results = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["engines"]) == {"sqlite", "postgresql"}
    for engine, figures in results["engines"].items():
        for table in ("market_data", "alert_logs"):
            for revision in REVISIONS:
                insert = figures["insert"][table][revision]
                assert 0 < insert["p50_ms"] <= insert["p99_ms"], (engine, table, revision)
                assert insert["bulk_rows_per_second"] > 0
        for read in figures["read"].values():
            assert all(read[revision] > 0 for revision in REVISIONS)
        for where in ("sql_ms", "python_ms"):
            assert figures["calculation"][where]["DECIMAL"] > 0
            assert figures["calculation"][where]["FLOAT"] > 0
        for path in ("service", "http"):
            runs = figures["load"][path]
            assert [r["writers"] for r in runs] == [1, 4]
            for run in runs:
                assert run["acknowledged"] > 0, (engine, path, run)
                assert run["all_acknowledged_stored"], (engine, path, run)
                assert run["database_locked_errors"] == 0, (engine, path, run)
        load = figures["load"]
        assert [s["ticks_per_message"] for s in load["stream"]] == [100, 1]
        for stream in load["stream"]:
            assert stream["acknowledged"] > 0, (engine, stream)
            assert stream["all_acknowledged_stored"], (engine, stream)
            assert stream["in_order"], (engine, stream)
            assert stream["errors"] == 0, (engine, stream)
        assert load["bulk_rows_per_second"] > 0
        assert load["single"]["live"]["p50_ms"] <= load["single"]["live"]["p99_ms"]
        http = load["http_vs_bare"]
        if shutil.which("wrk") is None:
            assert http == {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
        else:
            assert http["acknowledged"] > 0, (engine, http)
            assert http["all_acknowledged_stored"], (engine, http)
            assert http["errors"] == 0, (engine, http)
    assert results["engines"]["postgresql"]["server"].startswith("PostgreSQL")
