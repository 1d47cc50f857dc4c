"""`alembic upgrade head --sql` for PostgreSQL prints the whole DDL, with no server."""

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
