"""`tickvault db …` as a user runs it: through the command line, on both engines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.integration.migration_data import run_on
from tickvault.cli import app
from tickvault.services import schema

READ_PATH, HEAD = "a7c3e9d15b42", "c2f8d4b6e913"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def tickvault(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_upgrade_current_downgrade_and_history(runner: CliRunner, database_url: str) -> None:
    url = ["--database-url", database_url]

    code, out, err = tickvault(runner, "db", "upgrade", *url)
    assert code == 0, err
    assert out.strip() == f"database at revision {HEAD}"
    assert "Running upgrade 4a24cf1de90a -> f79e2702f75c" in err
    assert f"Running upgrade f79e2702f75c -> {READ_PATH}" in err
    assert f"Running upgrade {READ_PATH} -> {HEAD}" in err
    assert tickvault(runner, "db", "current", *url)[1].strip() == f"{HEAD} (head)"

    code, out, _ = tickvault(runner, "db", "downgrade", "-1", *url)
    assert (code, out.strip()) == (0, f"database at revision {READ_PATH}")
    # Every table is empty: dropping them destroys nothing, so it does not ask.
    code, out, _ = tickvault(runner, "db", "downgrade", "base", *url)
    assert (code, out.strip()) == (0, "database at revision base (empty)")
    assert tickvault(runner, "db", "current", *url)[1].startswith("none (empty database")
    code, out, _ = tickvault(runner, "db", "upgrade", "df856072bded", *url)
    assert (code, out.strip()) == (0, "database at revision df856072bded")

    code, out, _ = tickvault(runner, "db", "history")
    assert code == 0
    assert out.splitlines()[0].startswith("<base> -> 4524473b46fb")
    assert out.splitlines()[-1].startswith(f"{READ_PATH} -> {HEAD} (head)")


def test_build_indexes_then_upgrade(runner: CliRunner, database_url: str) -> None:
    url = ["--database-url", database_url]
    assert tickvault(runner, "db", "upgrade", "f79e2702f75c", *url)[0] == 0

    code, out, err = tickvault(runner, "db", "build-indexes", *url)
    if database_url.startswith("sqlite"):
        assert code == 1
        assert err.startswith("error: building indexes CONCURRENTLY is for PostgreSQL")
    else:
        assert code == 0, err
        assert out.splitlines()[0] == "ix_market_data_instrument_timestamp: built"
    code, out, _ = tickvault(runner, "db", "upgrade", *url)
    assert (code, out.strip()) == (0, f"database at revision {HEAD}")
    code, out, _ = tickvault(runner, "db", "build-indexes", *url)
    if not database_url.startswith("sqlite"):
        assert (code, out.strip()) == (0, "nothing to build: the next revision creates no index")


def test_the_url_comes_from_the_environment(
    runner: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKVAULT_DATABASE_URL", database_url)
    assert tickvault(runner, "db", "upgrade")[0] == 0
    assert tickvault(runner, "db", "current")[1].strip() == f"{HEAD} (head)"


def test_plain_alembic_takes_the_url_from_x_url_before_the_environment(
    database_url: str, tmp_path: Path
) -> None:
    """`alembic -x url=… upgrade head` from the repository root, as DESIGN.md promises: the
    -x URL is migrated, not TICKVAULT_DATABASE_URL's (a file that is never created)."""
    elsewhere = tmp_path / "elsewhere.db"
    env = {**os.environ, "TICKVAULT_DATABASE_URL": f"sqlite:///{elsewhere}"}

    def alembic(*args: str, url: str | None = database_url) -> str:
        x = ["-x", f"url={url}"] if url else []
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *x, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    alembic("upgrade", "head")
    assert alembic("current") == f"{HEAD} (head)"
    alembic("downgrade", "-1")
    assert alembic("current") == READ_PATH
    assert not elsewhere.exists()

    env["TICKVAULT_DATABASE_URL"] = database_url
    assert alembic("current", url=None) == READ_PATH
    alembic("upgrade", "head", url=None)
    assert schema.current_revision(database_url) == HEAD


def test_a_downgrade_that_would_lose_values_exits_non_zero(
    runner: CliRunner, database_url: str
) -> None:
    url = ["--database-url", database_url]
    assert tickvault(runner, "db", "upgrade", *url)[0] == 0

    def seed(connection: sa.Connection) -> None:
        connection.execute(
            sa.text("INSERT INTO instruments (id, symbol, name) VALUES (1, 'A', 'A')")
        )
        connection.execute(
            sa.text(
                "INSERT INTO market_data (instrument_id, timestamp, price) "
                "VALUES (1, CURRENT_TIMESTAMP, 123456789.0)"
            )
        )

    run_on(database_url, seed)
    code, out, err = tickvault(runner, "db", "downgrade", "base", "--yes", *url)
    assert code == 1
    # The steps it ran are logged above the error; the whole run rolled back.
    assert (
        err.strip().splitlines()[-1].startswith("error: cannot convert FLOAT back to DECIMAL(12,4)")
    )
    assert "market_data.price: 1 rows" in err
    assert "Traceback" not in out + err
    assert tickvault(runner, "db", "current", *url)[1].strip() == f"{HEAD} (head)"


TABLES = ["alert_logs", "alert_rules", "instruments", "market_data", "write_receipts"]


def _seed_every_table(connection: sa.Connection) -> None:
    connection.execute(sa.text("INSERT INTO instruments (id, symbol, name) VALUES (1, 'A', 'A')"))
    connection.execute(
        sa.text(
            "INSERT INTO alert_rules (id, name, instrument_id, condition, threshold) "
            "VALUES (1, 'r', 1, 'price_above', 1)"
        )
    )
    for deleted_at in ["CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP", "NULL"]:
        connection.execute(
            sa.text(
                "INSERT INTO market_data (instrument_id, timestamp, price, deleted_at) "
                f"VALUES (1, CURRENT_TIMESTAMP, 1.5, {deleted_at})"
            )
        )
    connection.execute(
        sa.text("INSERT INTO write_receipts (kind, key, fingerprint) VALUES ('file', 'k', 'f')")
    )


def _rows(database_url: str) -> dict[str, list[str]]:
    """Every row of every table, soft-deletion times and all: what a refusal must keep."""

    def read(connection: sa.Connection) -> dict[str, list[str]]:
        tables = set(sa.inspect(connection).get_table_names())
        return {
            table: sorted(map(repr, connection.execute(sa.text(f"SELECT * FROM {table}"))))
            for table in TABLES
            if table in tables
        }

    return run_on(database_url, read)


def _has_deleted_at(database_url: str) -> bool:
    return run_on(
        database_url,
        lambda c: "deleted_at" in {col["name"] for col in sa.inspect(c).get_columns("market_data")},
    )


def test_a_downgrade_that_drops_rows_says_what_and_needs_yes(
    runner: CliRunner, database_url: str
) -> None:
    url = ["--database-url", database_url]
    assert tickvault(runner, "db", "upgrade", *url)[0] == 0
    run_on(database_url, _seed_every_table)
    before = _rows(database_url)
    assert set(before) == set(TABLES)

    code, out, err = tickvault(runner, "db", "downgrade", "base", *url)
    assert (code, out) == (1, "")
    assert err == (
        f"error: downgrade from {HEAD} to base would drop table alert_logs (0 rows), "
        "table alert_rules (1 row), table instruments (1 row), table market_data (3 rows), "
        "table write_receipts (1 row); nothing was changed; run again with --yes to go ahead\n"
    )
    code, _, err = tickvault(runner, "db", "downgrade", "-1", *url)
    assert code == 1
    assert err.startswith(
        f"error: downgrade from {HEAD} to {READ_PATH} would drop table write_receipts (1 row); "
    )
    assert _rows(database_url) == before
    assert tickvault(runner, "db", "current", *url)[1].strip() == f"{HEAD} (head)"

    code, out, err = tickvault(runner, "db", "downgrade", "-1", "--yes", *url)
    assert (code, out.strip()) == (0, f"database at revision {READ_PATH}"), err
    assert "write_receipts" not in _rows(database_url)
    # Only indexes change on the way to f79e2702f75c: nothing to ask.
    code, out, err = tickvault(runner, "db", "downgrade", "f79e2702f75c", *url)
    assert (code, out.strip()) == (0, "database at revision f79e2702f75c"), err
    before = _rows(database_url)

    # Below f79e2702f75c there is no deleted_at: the two soft-deletion times would go.
    code, _, err = tickvault(runner, "db", "downgrade", "4a24cf1de90a", *url)
    assert code == 1
    assert err.startswith(
        "error: downgrade from f79e2702f75c to 4a24cf1de90a would drop column "
        "alert_logs.deleted_at (0 rows with a value), column market_data.deleted_at "
        "(2 rows with a value); nothing was changed"
    ), err
    assert _rows(database_url) == before
    assert _has_deleted_at(database_url)
    assert tickvault(runner, "db", "current", *url)[1].strip() == "f79e2702f75c"

    code, out, err = tickvault(runner, "db", "downgrade", "4a24cf1de90a", "--yes", *url)
    assert (code, out.strip()) == (0, "database at revision 4a24cf1de90a"), err
    assert not _has_deleted_at(database_url)
    assert len(_rows(database_url)["market_data"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["db", "upgrade", "--database-url", "mysql://root@localhost/x"],
            "error: unsupported database 'mysql'",
        ),
        (
            ["db", "upgrade", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
            "error: cannot reach the database at postgresql+asyncpg://nobody@127.0.0.1:1/x",
        ),
        (
            ["db", "current", "--database-url", "sqlite:///no/such/dir/x.db"],
            "error: database file no/such/dir/x.db does not exist",
        ),
        (
            ["db", "upgrade", "nosuchrev", "--database-url", "sqlite:///x.db"],
            "error: unknown revision 'nosuchrev'",
        ),
    ],
)
def test_bad_input_gets_one_line_and_a_non_zero_exit(
    runner: CliRunner,
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = tickvault(runner, *args)
    assert code == 1
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


def test_a_file_that_is_not_a_database_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello, this is not SQLite\n" * 100)
    code, _, err = tickvault(runner, "db", "upgrade", "--database-url", f"sqlite:///{path}")
    assert code == 1
    assert "file is not a database" in err
    assert path.read_text().startswith("hello")


def test_someone_elses_database_is_refused(runner: CliRunner, database_url: str) -> None:
    run_on(database_url, lambda c: c.execute(sa.text("CREATE TABLE customers (id INTEGER)")))
    code, _, err = tickvault(runner, "db", "upgrade", "--database-url", database_url)
    assert code == 1
    assert "has tables (customers) but no tickvault revision" in err

    run_on(
        database_url,
        lambda c: c.execute(
            sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        ),
    )
    run_on(
        database_url,
        lambda c: c.execute(sa.text("INSERT INTO alembic_version VALUES ('0123abcd')")),
    )
    code, _, err = tickvault(runner, "db", "current", "--database-url", database_url)
    assert code == 1
    assert "revision '0123abcd', which is not one of tickvault's" in err
