"""Offline SQL (`--sql`) for PostgreSQL, with no server: the whole chain, a range of it, and
the downgrade checks that run online, as statements of the script."""

from collections.abc import Callable

import pytest

from tickvault.errors import MigrationError
from tickvault.services import schema

NO_SERVER = "postgresql://nobody@host.invalid:1/nowhere"


def test_offline_upgrade_prints_the_whole_chain_for_postgresql() -> None:
    sql = schema.upgrade_sql(NO_SERVER, "head")

    assert sql.count("SET LOCAL lock_timeout") == 1
    for expected in (
        "CREATE TABLE instruments",
        "CREATE TABLE market_data",
        "CREATE INDEX ix_market_data_latest",
        "DROP INDEX ix_alert_logs_recent",
        "CREATE INDEX ix_market_data_instrument_price",
        "ALTER TABLE market_data ALTER COLUMN price TYPE DOUBLE PRECISION USING price::double "
        "precision, ALTER COLUMN bid TYPE DOUBLE PRECISION",
        "ALTER TABLE alert_logs ADD COLUMN deleted_at TIMESTAMP WITH TIME ZONE",
        "ON DELETE RESTRICT",
        "DROP INDEX ix_market_data_instrument_price",
        "CREATE INDEX ix_market_data_instrument_timestamp ON market_data (instrument_id, "
        "timestamp, id)",
        "CREATE INDEX ix_market_data_deleted_at ON market_data (deleted_at) WHERE deleted_at "
        "IS NOT NULL",
        "UPDATE alembic_version SET version_num='a7c3e9d15b42'",
        "CREATE TABLE write_receipts",
        "UPDATE alembic_version SET version_num='c2f8d4b6e913'",
        "COMMIT",
    ):
        assert expected in sql, expected


def test_offline_upgrade_can_start_from_a_revision() -> None:
    sql = schema.upgrade_sql(NO_SERVER, "head", start="4a24cf1de90a")
    assert "CREATE TABLE instruments" not in sql
    assert "CREATE TABLE write_receipts" in sql
    assert "fk_market_data_instrument_id_instruments" in sql


def test_offline_sql_for_sqlite_is_refused_with_the_reason() -> None:
    with pytest.raises(MigrationError, match=r"offline SQL .* is for PostgreSQL"):
        schema.upgrade_sql("sqlite:///anything.db", "head")


def test_a_range_gives_the_sql_of_those_revisions_only() -> None:
    sql = schema.upgrade_sql(NO_SERVER, "f79e2702f75c:a7c3e9d15b42")

    assert sql.count("-- Running upgrade") == 1
    assert "-- Running upgrade f79e2702f75c -> a7c3e9d15b42" in sql
    assert "CREATE INDEX ix_market_data_instrument_timestamp" in sql
    assert (
        "UPDATE alembic_version SET version_num='a7c3e9d15b42' "
        "WHERE alembic_version.version_num = 'f79e2702f75c'"
    ) in sql
    assert "write_receipts" not in sql
    assert "ON DELETE RESTRICT" not in sql


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: schema.upgrade_sql(NO_SERVER, "a7c3e9d15b42:f79e2702f75c"),
            r"a7c3e9d15b42:f79e2702f75c runs no revision: an upgrade range goes from older",
        ),
        (
            lambda: schema.downgrade_sql(NO_SERVER, "f79e2702f75c:a7c3e9d15b42"),
            r"not a valid downgrade target",
        ),
        (
            lambda: schema.upgrade_sql(NO_SERVER, "f79e2702f75c:nosuchrev"),
            r"unknown revision 'nosuchrev'",
        ),
        (
            # Offline the database's revision cannot be read: the start must be given.
            lambda: schema.downgrade_sql(NO_SERVER, "df856072bded"),
            r"an offline downgrade needs FROM:TO",
        ),
        (
            # Online the start is the database's own revision: refused before connecting.
            lambda: schema.upgrade(NO_SERVER, "f79e2702f75c:a7c3e9d15b42"),
            r"a range \(f79e2702f75c:a7c3e9d15b42\) is for offline SQL",
        ),
        (
            lambda: schema.downgrade_sql("sqlite:///anything.db", "head:base"),
            r"offline SQL .* is for PostgreSQL",
        ),
    ],
)
def test_a_range_that_cannot_work_is_refused_with_the_reason(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(MigrationError, match=message):
        call()


def test_the_offline_decimal_downgrade_checks_every_value_before_converting() -> None:
    sql = schema.downgrade_sql(NO_SERVER, "4a24cf1de90a:df856072bded")

    check = sql.index("DO $check$")
    assert check < sql.index("ALTER TABLE market_data ALTER COLUMN price TYPE NUMERIC(12, 4)")
    assert "RAISE EXCEPTION" in sql[check:]
    # The same words as the online refusal; the counts are filled in by the database.
    assert "'cannot convert FLOAT back to DECIMAL(12,4): values that are not finite" in sql
    assert "FROM market_data;" in sql
    assert "FROM alert_logs;" in sql
    assert "'alert_logs.threshold_value: '" in sql
