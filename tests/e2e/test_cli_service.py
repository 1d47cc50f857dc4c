"""`tickvault seed / simulate / ingest / purge / analyze / serve` through the CLI runner, on
both engines."""

import asyncio
import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.integration.migration_data import run_on
from tickvault.cli import app
from tickvault.cli.data import parse_duration
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.database.types import utcnow
from tickvault.errors import ValidationError
from tickvault.models import MarketData
from tickvault.services import simulator
from tickvault.services.demo import DEMO_INSTRUMENTS


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def tickvault(runner: CliRunner, url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--database-url", url])
    return result.exit_code, result.stdout, result.stderr


def scalar(url: str, sql: str) -> int:
    return int(run_on(url, lambda c: c.execute(sa.text(sql)).scalar_one()))


def test_seed_adds_the_demo_set_once(runner: CliRunner, head_url: str) -> None:
    code, out, err = tickvault(runner, head_url, "seed")
    assert code == 0, err
    assert f"added {len(DEMO_INSTRUMENTS)} instruments" in out
    assert tickvault(runner, head_url, "seed")[1].strip() == "demo data: already there"
    assert scalar(head_url, "SELECT count(*) FROM instruments") == len(DEMO_INSTRUMENTS)
    assert scalar(head_url, "SELECT count(*) FROM alert_rules") == 4 * len(DEMO_INSTRUMENTS)


class SteppedClock:
    """Time that passes only when the feed sleeps: the feed's pace without the machine's."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def now(self) -> float:
        return self.seconds

    async def sleep(self, seconds: float) -> None:
        self.seconds += seconds
        await asyncio.sleep(0)


def test_simulate_feeds_ticks_through_the_service(
    runner: CliRunner, head_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator, "SystemClock", SteppedClock)
    assert tickvault(runner, head_url, "simulate", "--duration", "1")[0] == 1  # nothing to feed
    tickvault(runner, head_url, "seed")
    code, out, err = tickvault(
        runner, head_url, "simulate", "--rate", "300", "--duration", "2", "--instruments", "2"
    )
    assert code == 0, err
    # 300 ticks/s for 2 s of the feed's clock: 20 steps of 30 ticks.
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 600
    assert scalar(head_url, "SELECT count(DISTINCT instrument_id) FROM market_data") == 2
    assert "ticks 600 " in out


def write_csv(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["symbol", "timestamp", "price", "volume"], *rows])


def test_ingest_stores_good_rows_and_lists_bad_ones_beside_the_file(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    tickvault(runner, head_url, "seed")
    source = tmp_path / "ticks.csv"
    good = [["AAPL", f"2024-05-06T13:30:{s:02d}Z", 190 + s / 100, 100] for s in range(50)]
    bad = [
        ["NOPE", "2024-05-06T13:30:00Z", 1, 1],
        ["AAPL", "2024-05-06T13:30:00", 1, 1],
        ["MSFT", "2024-05-06T13:30:00Z", "abc", 1],
        ["MSFT", "2024-05-06T13:30:00Z", 5, -3],
    ]
    write_csv(source, good[:20] + bad[:2] + good[20:] + bad[2:])

    code, out, _ = tickvault(runner, head_url, "ingest", str(source), "--batch-size", "7")
    assert code == 2  # some rows refused
    assert "stored 50 of 54 rows" in out
    rejects = source.with_name("ticks.csv.rejects.csv")
    assert f"4 rows refused: see {rejects}" in out
    with rejects.open() as handle:
        listed = list(csv.DictReader(handle))
    assert [(r["position"], r["symbol"]) for r in listed] == [
        ("20", "NOPE"),
        ("21", "AAPL"),
        ("52", "MSFT"),
        ("53", "MSFT"),
    ]
    assert "unknown instrument symbol 'NOPE'" in listed[0]["reason"]
    assert "no time zone" in listed[1]["reason"]
    assert listed[2]["price"] == "abc"
    assert "negative" in listed[3]["reason"]
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 50
    assert scalar(head_url, "SELECT round(max(price) * 100) FROM market_data") == 19049

    # A clean file: exit 0, and the previous run's rejects file is gone.
    write_csv(source, good[:3])
    code, out, _ = tickvault(runner, head_url, "ingest", str(source))
    assert code == 0
    assert "stored 3 of 3 rows" in out
    assert not rejects.exists()


def test_ingest_refuses_what_it_cannot_read(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    code, _, err = tickvault(runner, head_url, "ingest", str(tmp_path / "missing.csv"))
    assert (code, err.strip()) == (1, f"error: {tmp_path / 'missing.csv'}: no such file")
    headless = tmp_path / "prices.csv"
    headless.write_text("price,volume\n1,2\n")
    code, _, err = tickvault(runner, head_url, "ingest", str(headless))
    assert code == 1
    assert "missing column symbol or instrument_id, timestamp" in err
    code, _, err = tickvault(runner, head_url, "ingest", str(headless), "--column", "price")
    assert code == 1
    assert "expected NAME=FIELD" in err


def test_ingest_maps_columns(runner: CliRunner, head_url: str, tmp_path: Path) -> None:
    tickvault(runner, head_url, "seed")
    source = tmp_path / "feed.csv"
    source.write_text("ticker,ts,last\nAAPL,2024-05-06T13:30:00Z,191.25\n")
    code, out, err = tickvault(
        runner,
        head_url,
        "ingest",
        str(source),
        "--column",
        "ticker=symbol",
        "--column",
        "ts=timestamp",
        "--column",
        "last=price",
    )
    assert code == 0, out + err
    assert scalar(head_url, "SELECT round(price * 100) FROM market_data") == 19125


def test_purge_dry_run_counts_then_purge_deletes_only_old_soft_deleted_rows(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    tickvault(runner, head_url, "seed")
    source = tmp_path / "ticks.csv"
    write_csv(source, [["AAPL", f"2024-05-06T13:30:{s:02d}Z", 190, 1] for s in range(10)])
    tickvault(runner, head_url, "ingest", str(source))

    async def soft_delete(ids: range, days_ago: int) -> None:
        engine = create_engine(head_url)
        try:
            async with create_session_factory(engine).begin() as session:
                for tick in await session.scalars(
                    sa.select(MarketData).where(MarketData.id.in_(ids))
                ):
                    tick.soft_delete(at=utcnow() - timedelta(days=days_ago))
        finally:
            await engine.dispose()

    asyncio.run(soft_delete(range(1, 4), days_ago=40))
    asyncio.run(soft_delete(range(4, 6), days_ago=1))

    code, out, err = tickvault(runner, head_url, "purge", "--older-than", "30d", "--dry-run")
    assert code == 0, err
    assert "market_data: would delete 3" in out
    assert "alert_logs: would delete 0" in out
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 10

    code, out, _ = tickvault(runner, head_url, "purge", "--older-than", "30d")
    assert "market_data: deleted 3" in out
    assert "idempotency keys used before " in out
    assert out.rstrip().endswith(": deleted 0")
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 7
    assert scalar(head_url, "SELECT count(*) FROM market_data WHERE deleted_at IS NOT NULL") == 2

    code, _, err = tickvault(runner, head_url, "purge", "--older-than", "soon")
    assert code == 1
    assert "duration 'soon' not understood" in err


def test_purge_of_more_rows_than_confirm_above_needs_yes(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    tickvault(runner, head_url, "seed")
    source = tmp_path / "ticks.csv"
    write_csv(source, [["AAPL", f"2024-05-06T13:30:{s:02d}Z", 190, 1] for s in range(10)])
    tickvault(runner, head_url, "ingest", str(source))
    run_on(
        head_url,
        lambda c: c.execute(
            sa.update(MarketData).where(MarketData.id <= 4).values(deleted_at=utcnow())
        ),
    )
    purge = ["purge", "--older-than", "0s", "--confirm-above", "3"]

    code, out, err = tickvault(runner, head_url, *purge, "--dry-run")
    assert code == 0, err
    assert "market_data: would delete 4" in out
    assert "more than 3 rows: the purge will need --yes" in out

    code, out, err = tickvault(runner, head_url, *purge)
    assert (code, out) == (1, "")
    assert err == (
        "error: purge would delete 4 rows (alert_logs: 0, market_data: 4, write_receipts: 0), "
        "more than 3; nothing was deleted; run again with --yes to go ahead\n"
    )
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 10

    code, out, err = tickvault(runner, head_url, *purge, "--yes")
    assert code == 0, err
    assert "market_data: deleted 4" in out
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 6


def test_analyze_prints_the_table_and_refuses_unknown_names(
    runner: CliRunner, head_url: str
) -> None:
    tickvault(runner, head_url, "seed")
    seeded = len(DEMO_INSTRUMENTS)
    postgres = head_url.startswith("postgresql")
    if postgres:  # the estimate is the count once the statistics are fresh
        run_on(head_url, lambda c: c.execute(sa.text("ANALYZE instruments, alert_rules")))
    code, out, err = tickvault(runner, head_url, "analyze", "instruments")
    assert code == 0, err
    engine, rows = ("postgresql", f"~{seeded}") if postgres else ("sqlite", f"{seeded}")
    assert out.splitlines()[0].startswith(f"instruments ({engine}): {rows} rows, table ")
    assert out.rstrip().endswith("- Nothing to change on instruments from the figures so far.")
    code, out, _ = tickvault(runner, head_url, "analyze", "alert_rules", "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["table"], report["engine"]) == ("alert_rules", engine)
    assert report["rows_estimate" if postgres else "rows"] == 4 * seeded
    assert sorted(report["indexes"]) == ["ix_alert_rules_instrument"]
    code, _, err = tickvault(runner, head_url, "analyze", "orders")
    assert code == 1
    assert err.startswith("error: unknown table 'orders': the database has alembic_version, ")


def test_serve_refuses_an_open_interface_without_a_key_and_an_old_schema(
    runner: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickvault.settings import get_settings

    monkeypatch.delenv("TICKVAULT_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        code, _, err = tickvault(runner, database_url, "serve", "--host", "0.0.0.0")
        assert code == 1
        assert "refusing to listen on 0.0.0.0 without TICKVAULT_API_KEY" in err
        tickvault(runner, database_url, "db", "upgrade", "4a24cf1de90a")
        code, _, err = tickvault(runner, database_url, "serve")
        assert code == 1
        assert "run `tickvault db upgrade` first" in err
    finally:
        get_settings.cache_clear()


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("0s") == timedelta(0)
    for text in ("", "30", "-1d", "1.5h", "3x"):
        with pytest.raises(ValidationError):
            parse_duration(text)
