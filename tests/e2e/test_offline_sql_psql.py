"""Offline SQL as an operator uses it on PostgreSQL: printed revision by revision
(`tickvault db upgrade|downgrade --sql FROM:TO`, or `alembic … --sql` from the repository
root), read, and run with psql; and the DECIMAL(12,4) downgrade's check, which stops it.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from typer.testing import CliRunner

from tests.conftest import postgres_admin_url
from tests.integration.migration_data import (
    count_rows,
    insert_rows,
    make_rows,
    normalized,
    read_rows,
    run_on,
)
from tests.integration.test_migration_round_trip import assert_schema_at, describe_schema
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


def sql_from_the_cli(url: str, direction: str, revisions: str) -> str:
    """`tickvault db upgrade|downgrade --sql FROM:TO`."""
    result = CliRunner().invoke(app, ["db", direction, "--sql", revisions, "--database-url", url])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def sql_from_alembic(url: str, direction: str, revisions: str) -> str:
    """`alembic -x url=… upgrade|downgrade FROM:TO --sql` from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", direction, revisions, "--sql"],
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
        sql = sql_from_the_cli(postgres_url, direction, revisions)
        assert sql.count(f"-- Running {direction}") == 1, revisions
        # Plain Alembic from the repository root prints the same script.
        assert sql_from_alembic(postgres_url, direction, revisions) == sql, revisions
        ran = psql(postgres_url, sql)
        assert ran.returncode == 0, (revisions, ran.stderr)

        assert schema.current_revision(postgres_url) == revision
        if revision == BASELINE and direction == "upgrade":
            insert_rows(postgres_url, rows)
        assert_schema_at(postgres_url, revision)
        assert count_rows(postgres_url) == counts, revisions
        assert read_rows(postgres_url, "market_data") == expected["market_data"], revisions
        assert read_rows(postgres_url, "alert_logs") == expected["alert_logs"], revisions


OUT_OF_RANGE = [
    # price: 1e8 (too large once rounded), NaN; bid: +inf; ask: -inf
    {"price": 1e8},
    {"price": float("nan"), "bid": float("inf"), "ask": float("-inf")},
    {"price": 99999999.99994, "bid": 1.23456},  # both fit
]


def _seed(connection: Connection) -> None:
    connection.execute(sa.text("INSERT INTO instruments (id, symbol, name) VALUES (1, 'A', 'A')"))
    connection.execute(
        sa.text(
            "INSERT INTO alert_rules (id, name, instrument_id, condition, threshold) "
            "VALUES (1, 'r', 1, 'price_above', 1)"
        )
    )
    for values in OUT_OF_RANGE:
        row = {"price": None, "bid": None, "ask": None, **values}
        connection.execute(
            sa.text(
                "INSERT INTO market_data (instrument_id, timestamp, price, bid, ask) "
                "VALUES (1, now(), :price, :bid, :ask)"
            ),
            row,
        )
    connection.execute(
        sa.text(
            "INSERT INTO alert_logs (rule_id, instrument_id, timestamp, trigger_value, "
            "threshold_value, fired_status) VALUES (1, 1, now(), 2.5, 1e12, 'fired')"
        )
    )


def _prices(connection: Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in connection.execute(
            sa.text("SELECT price::text, bid::text, ask::text FROM market_data ORDER BY id")
        )
    ]


REFUSAL = (
    "ERROR:  cannot convert FLOAT back to DECIMAL(12,4): values that are not finite or whose "
    "magnitude reaches 1e8 in market_data.price: 2 rows; market_data.bid: 1 rows; "
    "market_data.ask: 1 rows; alert_logs.threshold_value: 1 rows. Nothing was changed; fix "
    "or remove those rows first."
)


def test_the_offline_decimal_downgrade_stops_on_a_value_that_does_not_fit(
    postgres_url: str,
) -> None:
    schema.upgrade(postgres_url, HEAD)
    run_on(postgres_url, _seed)
    before = (describe_schema(postgres_url), run_on(postgres_url, _prices))
    # From head down past 4a24cf1de90a: three steps run before the check, in one transaction.
    sql = schema.downgrade_sql(postgres_url, f"{HEAD}:{INDEXES}")

    stopped = psql(postgres_url, sql)
    assert stopped.returncode == 3  # psql's "a script stopped on an error"
    assert REFUSAL in stopped.stderr
    assert schema.current_revision(postgres_url) == HEAD
    assert (describe_schema(postgres_url), run_on(postgres_url, _prices)) == before

    # psql's default goes on after the error, but the transaction is aborted: every later
    # statement is refused and COMMIT rolls back.
    carried_on = psql(postgres_url, sql, stop_on_error=False)
    assert REFUSAL in carried_on.stderr
    assert "current transaction is aborted" in carried_on.stderr
    assert schema.current_revision(postgres_url) == HEAD
    assert (describe_schema(postgres_url), run_on(postgres_url, _prices)) == before

    # Without the values that do not fit, the same script goes through.
    run_on(
        postgres_url,
        lambda c: c.execute(
            sa.text("DELETE FROM market_data WHERE NOT (price < 1e8 AND bid < 1e8 AND ask > -1e8)")
        ),
    )
    run_on(postgres_url, lambda c: c.execute(sa.text("DELETE FROM alert_logs")))
    went = psql(postgres_url, sql)
    assert went.returncode == 0, went.stderr
    assert schema.current_revision(postgres_url) == INDEXES
    assert_schema_at(postgres_url, INDEXES)
    assert run_on(postgres_url, _prices) == [("99999999.9999", "1.2346", None)]
