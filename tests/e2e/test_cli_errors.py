"""What every command that opens the database says when it cannot use it, and what `ingest`
says about a file it cannot read or a load the database stopped: one line on stderr and a
non-zero exit, never a traceback; no stray empty SQLite file. On both engines."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import Result
from typer.testing import CliRunner

from tests.integration.migration_data import run_on
from tickvault.bench.load import free_port
from tickvault.cli import app
from tickvault.services import schema
from tickvault.settings import get_settings

HEADER = "symbol,timestamp,price,volume\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def ticks(tmp_path: Path) -> Path:
    path = tmp_path / "ticks.csv"
    path.write_text(HEADER + "AAPL,2024-05-06T13:30:00Z,190.5,100\n")
    return path


def commands(ticks: Path) -> dict[str, list[str]]:
    """Every command that opens the database, with what it needs to run."""
    return {
        "ingest": ["ingest", str(ticks)],
        "seed": ["seed"],
        "purge": ["purge", "--older-than", "30d"],
        "analyze": ["analyze", "market_data"],
        "simulate": ["simulate", "--duration", "1"],
        "export": [
            "export", "--instrument", "AAPL", "--start", "2024-05-06T00:00:00Z",
            "--end", "2024-05-07T00:00:00Z", str(ticks.with_name("out.parquet")),
        ],
    }  # fmt: skip


def run(runner: CliRunner, url: str, args: list[str]) -> Result:
    return runner.invoke(app, [*args, "--database-url", url])


def one_line_error(result: Result) -> str:
    """The error line of a command that failed as it should: exit 1, no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def engine_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def test_a_missing_database_is_one_line_and_never_created(
    runner: CliRunner, database_url: str, tmp_path: Path, ticks: Path
) -> None:
    if engine_of(database_url) == "sqlite":
        folder = tmp_path / "no-such-folder"
        missing = {
            f"sqlite:///{folder / 'tickvault.db'}": folder / "tickvault.db",
            f"sqlite:///{tmp_path / 'typo.db'}": tmp_path / "typo.db",
        }
        for url, path in missing.items():
            for name, args in commands(ticks).items():
                line = one_line_error(run(runner, url, args))
                assert line == (
                    f"error: database file {path} does not exist: "
                    "create it with `tickvault db upgrade`"
                ), name
                assert not path.exists(), name
                assert not folder.exists(), name
    else:
        url = sa.make_url(database_url)
        gone = url.set(database=f"{url.database}_gone").render_as_string(hide_password=False)
        for name, args in commands(ticks).items():
            line = one_line_error(run(runner, gone, args))
            assert f'database "{url.database}_gone" does not exist' in line, name


@pytest.fixture
def locked_or_unreachable(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """PostgreSQL: a closed port. SQLite (no server to be away): a file another process
    holds the write lock of, past a 100 ms busy timeout."""
    if engine_of(database_url) == "postgresql":
        url = sa.make_url(database_url).set(port=free_port())
        yield url.render_as_string(hide_password=False)
        return
    schema.upgrade(database_url, "head")
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "100")
    get_settings.cache_clear()
    holder = sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield database_url
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        get_settings.cache_clear()


def test_an_unreachable_or_locked_database_is_one_line(
    runner: CliRunner, locked_or_unreachable: str, ticks: Path
) -> None:
    url = locked_or_unreachable
    for name, args in commands(ticks).items():
        result = run(runner, url, args)
        if engine_of(url) == "sqlite" and name == "analyze":
            assert result.exit_code == 0, result.output  # reads go on beside a writer (WAL)
            continue
        if engine_of(url) == "sqlite" and name == "export":  # it read: no such instrument
            assert one_line_error(result) == "error: instrument 'AAPL' not found"
            continue
        line = one_line_error(result)
        assert line.startswith("error: database unavailable at "), (name, line)
        reason = "database is locked" if engine_of(url) == "sqlite" else "Connect call failed"
        assert reason in line, (name, line)


def test_a_file_that_is_not_a_database_or_holds_no_schema_is_one_line(
    runner: CliRunner, database_url: str, tmp_path: Path, ticks: Path
) -> None:
    urls = [database_url]  # empty: no tickvault schema
    if engine_of(database_url) == "sqlite":
        text = tmp_path / "notes.db"
        text.write_text("shopping list: milk, eggs\n" * 100)
        for name, args in commands(ticks).items():
            line = one_line_error(run(runner, f"sqlite:///{text}", args))
            assert line.endswith(": file is not a database"), (name, line)
        assert text.read_text().startswith("shopping list")
        run_on(database_url, lambda c: c.execute(sa.text("CREATE TABLE t (x int)")))
    for url in urls:
        for name, args in commands(ticks).items():
            line = one_line_error(run(runner, url, args))
            if name == "analyze":  # any table of any database: there is no market_data
                assert "market_data" in line, line
            else:
                assert line.endswith(
                    "holds no tickvault schema: run `tickvault db upgrade` first"
                ), (name, line)


def test_an_old_schema_is_refused_before_anything_runs(
    runner: CliRunner, database_url: str, ticks: Path
) -> None:
    schema.upgrade(database_url, "a7c3e9d15b42")
    for name, args in commands(ticks).items():
        if name == "analyze":
            continue
        line = one_line_error(run(runner, database_url, args))
        assert f"is at revision a7c3e9d15b42, the code at {schema.head_revision()}: " in line
        assert line.endswith("run `tickvault db upgrade` first"), (name, line)


@pytest.fixture
def read_only_url(head_url: str) -> str:
    """SQLite: the file opened read-only, as SQLite opens a file it may not write (root
    writes whatever the file's mode, so the test asks for it). PostgreSQL: a database whose
    sessions are read-only, as on a standby."""
    url = sa.make_url(head_url)
    if engine_of(head_url) == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true"
    run_on(
        head_url,
        lambda c: c.execute(
            sa.text(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on')
        ),
    )
    return head_url


def test_a_read_only_database_is_one_line_for_commands_that_write(
    runner: CliRunner, read_only_url: str, ticks: Path
) -> None:
    for name, args in commands(ticks).items():
        result = run(runner, read_only_url, args)
        if name == "analyze":
            assert result.exit_code == 0, result.output
            continue
        if name == "export":  # reads only: it got as far as looking the instrument up
            assert one_line_error(result) == "error: instrument 'AAPL' not found"
            continue
        line = one_line_error(result)
        assert "read-only" in line or "readonly" in line, (name, line)
    dry_run = run(runner, read_only_url, ["purge", "--older-than", "30d", "--dry-run"])
    assert dry_run.exit_code == 0, dry_run.output


def poison(url: str) -> None:
    """Make the database fail, as a full disk would, on every tick priced 1,000 or more:
    a trigger that raises an error that is no row's fault (SQLite: malformed JSON, a plain
    SQLITE_ERROR; PostgreSQL: SQLSTATE 53100 disk_full)."""
    if engine_of(url) == "sqlite":
        statements = [
            "CREATE TRIGGER poison BEFORE INSERT ON market_data WHEN NEW.price >= 1000 "
            "BEGIN SELECT json('disk on fire'); END"
        ]
    else:
        statements = [
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.price >= 1000 THEN RAISE EXCEPTION 'disk on fire' USING ERRCODE = "
            "'disk_full'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER poison BEFORE INSERT ON market_data FOR EACH ROW "
            "EXECUTE FUNCTION poison()",
        ]

    def work(connection: sa.Connection) -> None:
        for statement in statements:
            connection.exec_driver_sql(statement)

    run_on(url, work)


def count(url: str) -> int:
    return int(
        run_on(url, lambda c: c.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one())
    )


def test_a_load_the_database_stops_says_how_many_rows_were_stored(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    assert run(runner, head_url, ["seed"]).exit_code == 0
    poison(head_url)
    source = tmp_path / "ticks.csv"
    prices = [100 + n for n in range(20)] + [1000 + n for n in range(20)]
    source.write_text(
        HEADER
        + "".join(f"AAPL,2024-05-06T13:30:{n:02d}Z,{price},1\n" for n, price in enumerate(prices))
    )

    result = run(runner, head_url, ["ingest", str(source), "--batch-size", "10"])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    stopped, error = result.stderr.strip().splitlines()
    assert stopped == (
        f"stopped: 20 rows of {source} were stored by this run; "
        "run the same command again to continue after them"
    )
    assert error.startswith("error: database error at "), error
    assert error.endswith("malformed JSON" if engine_of(head_url) == "sqlite" else "disk on fire")
    assert count(head_url) == 20
    assert not source.with_name("ticks.csv.rejects.csv").exists()  # no row was refused


def test_files_ingest_cannot_read_are_one_line(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    table = pa.table(
        {"symbol": ["AAPL"] * 50, "timestamp": pa.array([0] * 50, pa.timestamp("us", "UTC"))}
    )
    good = tmp_path / "good.parquet"
    pq.write_table(table, good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    misnamed = tmp_path / "ticks.parquet"
    misnamed.write_text(HEADER + "AAPL,2024-05-06T13:30:00Z,190.5,100\n")

    line = one_line_error(run(runner, head_url, ["ingest", str(truncated)]))
    assert line.startswith(f"error: {truncated}: truncated or damaged Parquet file ("), line
    line = one_line_error(run(runner, head_url, ["ingest", str(misnamed)]))
    assert line == (
        f"error: {misnamed}: not a Parquet file (it does not start with PAR1: "
        "a CSV file named .parquet?)"
    )
    assert count(head_url) == 0


def test_ingest_reads_a_bom_and_refuses_extra_fields_and_unterminated_quotes(
    runner: CliRunner, head_url: str, tmp_path: Path
) -> None:
    assert run(runner, head_url, ["seed"]).exit_code == 0
    source = tmp_path / "ticks.csv"
    source.write_bytes(
        b"\xef\xbb\xbf"
        + (
            HEADER
            + "AAPL,2024-05-06T13:30:00Z,190.5,100\n"
            + "AAPL,2024-05-06T13:30:01Z,190.5,100,XNAS\n"
            + 'AAPL,"2024-05-06T13:30:02Z,190.5,100\n'
            + "AAPL,2024-05-06T13:30:03Z,190.75,100\n"
        ).encode()
    )

    result = run(runner, head_url, ["ingest", str(source)])

    assert result.exit_code == 2, result.output  # some rows refused
    assert "stored 2 of 4 rows" in result.stdout
    rejects = source.with_name("ticks.csv.rejects.csv").read_text()
    assert "line 3: 5 fields, the header has 4: extra 'XNAS'" in rejects
    assert "line 4: a quoted field runs past the end of the line" in rejects
    assert count(head_url) == 2
