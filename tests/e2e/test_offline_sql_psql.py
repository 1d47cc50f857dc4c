"""Offline SQL as an operator uses it on PostgreSQL: printed revision by revision
(`tickvault db upgrade --sql FROM:TO`, `alembic downgrade FROM:TO --sql`), read, and run
with psql; and the DECIMAL(12,4) downgrade's check, which stops the script.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from tests.conftest import postgres_admin_url
from tests.integration.migration_data import (
    count_rows,
    insert_rows,
    make_rows,
    normalized,
    read_rows,
)
from tests.integration.test_migration_round_trip import assert_schema_at
from tickvault.bench.data import throwaway
from tickvault.cli import app
from tickvault.services import schema

REPO = Path(__file__).resolve().parents[2]
BASELINE, INDEXES, HEAD = "4524473b46fb", "df856072bded", "c2f8d4b6e913"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway("postgresql", postgres_admin_url()) as url:
        yield url


def psql(url: str, sql: str, *, stop_on_error: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a script with psql as an operator would (`-v ON_ERROR_STOP=1` or psql's default,
    which goes on after an error)."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    options = ["-v", "ON_ERROR_STOP=1"] if stop_on_error else []
    return subprocess.run(
        ["psql", "-X", "-q", *options, "-d", libpq, "-f", "-"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=120,
    )


def upgrade_sql_from_the_cli(url: str, revisions: str) -> str:
    result = CliRunner().invoke(app, ["db", "upgrade", "--sql", revisions, "--database-url", url])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def downgrade_sql_from_alembic(url: str, revisions: str) -> str:
    """`alembic -x url=… downgrade FROM:TO --sql` from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "downgrade", revisions, "--sql"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_chain_revision_by_revision_through_psql(postgres_url: str) -> None:
    """The procedure of docs/migrations.md: each revision's SQL printed, then run with psql,
    up to head and back down; the schema and every row as the online migrations leave them."""
    chain = [rev.id for rev in schema.history()]
    rows = make_rows(n_ticks=500, n_alerts=50)
    expected = {t: [normalized(t, r) for r in rows[t]] for t in ("market_data", "alert_logs")}
    counts = {table: len(rows[table]) for table in rows}
    steps = [
        *(("upgrade", f"{prev}:{rev}" if prev else rev, rev) for prev, rev in
          zip([None, *chain[:-1]], chain, strict=True)),
        *(("downgrade", f"{rev}:{prev}", prev) for prev, rev in
          zip(chain[-2::-1], chain[:0:-1], strict=True)),
    ]  # fmt: skip

    for direction, revisions, revision in steps:
        if direction == "upgrade":
            sql = upgrade_sql_from_the_cli(postgres_url, revisions)
        else:
            sql = downgrade_sql_from_alembic(postgres_url, revisions)
        assert sql.count(f"-- Running {direction}") == 1, revisions
        ran = psql(postgres_url, sql)
        assert ran.returncode == 0, (revisions, ran.stderr)

        assert schema.current_revision(postgres_url) == revision
        if revision == BASELINE and direction == "upgrade":
            insert_rows(postgres_url, rows)
        assert_schema_at(postgres_url, revision)
        assert count_rows(postgres_url) == counts, revisions
        assert read_rows(postgres_url, "market_data") == expected["market_data"], revisions
        assert read_rows(postgres_url, "alert_logs") == expected["alert_logs"], revisions
