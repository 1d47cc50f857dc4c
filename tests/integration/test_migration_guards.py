"""What the migrations refuse or report: RESTRICT at head, a FLOAT value DECIMAL(12,4)
cannot hold, soft-deleted rows on the way down, a migration stuck behind a busy table."""

import asyncio
import contextlib
import logging
import sqlite3
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.integration.migration_data import reflect, run_on
from tickvault.database.engine import create_engine
from tickvault.errors import DatabaseError, MigrationError
from tickvault.services import schema
from tickvault.settings import get_settings

BASELINE, FLOATS, HEAD = "4524473b46fb", "4a24cf1de90a", "c2f8d4b6e913"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _seed(connection: Connection, ticks: list[dict[str, object]]) -> None:
    connection.execute(
        reflect(connection, "instruments").insert(),
        [{"id": 1, "symbol": "AAPL", "name": "Apple"}],
    )
    # An executemany takes its columns from the first row: give every row every key.
    keys = {key for tick in ticks for key in tick}
    connection.execute(
        reflect(connection, "market_data").insert(),
        [{"instrument_id": 1, "timestamp": NOW, **dict.fromkeys(keys), **tick} for tick in ticks],
    )


def _delete_instrument(connection: Connection) -> None:
    connection.execute(sa.text("DELETE FROM instruments WHERE id = 1"))


def _count(url: str, table: str) -> int:
    return run_on(url, lambda c: c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_at_head_deleting_an_instrument_with_ticks_is_refused(database_url: str) -> None:
    schema.upgrade(database_url, HEAD)
    run_on(database_url, lambda c: _seed(c, [{"price": 1.5}, {"price": 2.5}]))

    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        run_on(database_url, _delete_instrument)

    assert _count(database_url, "market_data") == 2
    assert _count(database_url, "instruments") == 1


def test_at_the_baseline_deleting_an_instrument_cascades(database_url: str) -> None:
    schema.upgrade(database_url, BASELINE)
    run_on(database_url, lambda c: _seed(c, [{"price": 1.5}, {"price": 2.5}]))

    run_on(database_url, _delete_instrument)

    assert _count(database_url, "market_data") == 0


def _bad_values(dialect: str) -> list[float]:
    # SQLite cannot store NaN (it becomes NULL), so NaN is a PostgreSQL-only case.
    values = [1e8, -123456789.5, float("inf"), float("-inf")]
    return [*values, float("nan")] if dialect == "postgresql" else values


def test_float_to_decimal_downgrade_refuses_values_that_do_not_fit(database_url: str) -> None:
    schema.upgrade(database_url, HEAD)
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    bad = _bad_values(dialect)
    run_on(
        database_url,
        lambda c: _seed(
            c, [{"price": v} for v in bad] + [{"price": 1.25, "bid": 1e9}, {"price": 99999999.9999}]
        ),
    )

    with pytest.raises(MigrationError) as caught:
        schema.downgrade(database_url, BASELINE, allow_data_loss=True)

    message = str(caught.value)
    assert f"market_data.price: {len(bad)} rows" in message
    assert "market_data.bid: 1 rows" in message
    assert "Nothing was changed" in message
    # The whole run rolled back: still at head, soft delete column and all.
    assert schema.current_revision(database_url) == HEAD
    assert _count(database_url, "market_data") == len(bad) + 2
    assert run_on(database_url, lambda c: "deleted_at" in reflect(c, "market_data").c)


def test_downgrading_soft_delete_deletes_nothing_and_says_how_many(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema.upgrade(database_url, HEAD)
    run_on(
        database_url,
        lambda c: _seed(
            c,
            [
                {"price": 1.0, "deleted_at": NOW},
                {"price": 2.0, "deleted_at": NOW},
                {"price": 3.0},
            ],
        ),
    )

    with caplog.at_level(logging.WARNING, logger="tickvault.migrations"):
        schema.downgrade(database_url, FLOATS, allow_data_loss=True)

    assert _count(database_url, "market_data") == 3
    said = [r.getMessage() for r in caplog.records if r.name == "tickvault.migrations"]
    # alert_logs had nothing soft-deleted, so only market_data is reported.
    assert len(said) == 1
    assert said[0].startswith("market_data: 2 soft-deleted rows become visible again")


@pytest.fixture
def short_lock_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKVAULT_MIGRATION_LOCK_TIMEOUT_MS", "300")
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "300")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_migration_behind_a_busy_table_fails_fast(
    database_url: str, short_lock_timeouts: None
) -> None:
    schema.upgrade(database_url, FLOATS)

    async def hold_lock_while_upgrading() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                await connection.begin()
                # An open writer: PostgreSQL holds a row lock and a table lock on
                # market_data; SQLite holds the database's write lock.
                await connection.execute(
                    sa.text("INSERT INTO instruments (id, symbol, name) VALUES (1, 'X', 'X')")
                )
                await connection.execute(
                    sa.text(
                        "INSERT INTO market_data (instrument_id, timestamp) "
                        "VALUES (1, CURRENT_TIMESTAMP)"
                    )
                )
                # The lock timeout's own error: without it the upgrade would wait for this
                # writer (forever, here), not fail.
                with pytest.raises(DatabaseError, match=r"lock timeout|database is locked"):
                    await asyncio.to_thread(schema.upgrade, database_url, HEAD)
                await connection.rollback()
        finally:
            await engine.dispose()

    asyncio.run(hold_lock_while_upgrading())
    assert schema.current_revision(database_url) == FLOATS


def _insert_orphan_tick(url: str) -> None:
    """A tick of instrument 99, which does not exist: written with the foreign keys off
    (a plain sqlite3 connection has them off; on PostgreSQL, replica mode skips them)."""
    insert = "INSERT INTO market_data (instrument_id, timestamp, price) VALUES (99, '{}', 7.5)"
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        assert path is not None
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute(insert.format(NOW.isoformat()))
            connection.commit()
        return

    def write(connection: Connection) -> None:
        connection.execute(sa.text("SET LOCAL session_replication_role = replica"))
        connection.execute(sa.text(insert.format(NOW.isoformat())))

    run_on(url, write)


def test_an_upgrade_over_a_row_that_breaks_a_foreign_key_rolls_back(database_url: str) -> None:
    """SQLite recreates market_data with its foreign keys off and runs PRAGMA
    foreign_key_check before the COMMIT; PostgreSQL checks the row as it adds the RESTRICT
    key. Either way the whole upgrade is refused and nothing changes."""
    schema.upgrade(database_url, FLOATS)
    run_on(database_url, lambda c: _seed(c, [{"price": 1.5}]))
    _insert_orphan_tick(database_url)

    expected = (
        r"foreign key check failed after migration \(market_data: 1 rows\); rolled back"
        if database_url.startswith("sqlite")
        else r'insert or update on table "market_data" violates foreign key constraint '
        r'"fk_market_data_instrument_id_instruments"'
    )
    with pytest.raises((MigrationError, DatabaseError), match=expected):
        schema.upgrade(database_url, HEAD)

    assert schema.current_revision(database_url) == FLOATS
    ticks = run_on(
        database_url,
        lambda c: c.execute(
            sa.text("SELECT instrument_id, price FROM market_data ORDER BY id")
        ).all(),
    )
    assert [tuple(t) for t in ticks] == [(1, 1.5), (99, 7.5)]
    assert run_on(database_url, lambda c: "deleted_at" not in reflect(c, "market_data").c)


def test_a_migration_inside_the_caller_s_transaction(database_url: str) -> None:
    """Alembic's recipe hands a connection in with its transaction begun. SQLite cannot
    switch foreign keys off inside it (recreating instruments would then cascade into
    market_data), so the migration is refused and the ticks stay; PostgreSQL runs it in
    that transaction, which is the caller's to roll back or commit."""
    schema.upgrade(database_url, FLOATS)
    run_on(database_url, lambda c: _seed(c, [{"price": 1.5}, {"price": 2.5}]))

    async def upgrade_in_transaction(finish: str) -> None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                await connection.begin()
                config = schema.alembic_config(database_url)

                def run(sync_connection: Connection) -> None:
                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, HEAD)

                await connection.run_sync(run)
                await getattr(connection, finish)()
        finally:
            await engine.dispose()

    if database_url.startswith("sqlite"):
        with pytest.raises(
            MigrationError,
            match=r"^could not switch SQLite foreign keys off: run migrations on a connection "
            r"that is not inside a transaction$",
        ):
            asyncio.run(upgrade_in_transaction("commit"))
        assert schema.current_revision(database_url) == FLOATS
    else:
        asyncio.run(upgrade_in_transaction("rollback"))
        assert schema.current_revision(database_url) == FLOATS
        asyncio.run(upgrade_in_transaction("commit"))
        assert schema.current_revision(database_url) == HEAD
    assert _count(database_url, "market_data") == 2
