"""`tickvault db build-indexes` before `upgrade`: a7c3e9d15b42's indexes built on a live
PostgreSQL table without blocking writers, then kept by the revision; refused on SQLite.

To catch the build in the middle, a transaction with an older snapshot stays open: CREATE
INDEX CONCURRENTLY waits for it before it finishes, and meanwhile a writer must get through.
"""

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conftest import postgres_admin_url
from tests.integration.migration_data import index_shapes, insert_rows, make_rows, run_on
from tests.integration.test_migration_round_trip import HEAD_INDEXES
from tickvault.bench.data import throwaway
from tickvault.database.engine import create_engine
from tickvault.errors import DatabaseError, MigrationError
from tickvault.services import schema

SOFT_DELETE, HEAD = "f79e2702f75c", "a7c3e9d15b42"
NEW = "ix_market_data_instrument_timestamp"
BUILT = [NEW, "ix_market_data_deleted_at", "ix_alert_logs_deleted_at", "ix_alert_rules_instrument"]
DELETED = "deleted_at IS NOT NULL"
TICK = "INSERT INTO market_data (instrument_id, timestamp, price) VALUES (1, :t, 1.5)"


@pytest.fixture
def live_table() -> Iterator[str]:
    """A PostgreSQL database at f79e2702f75c holding rows, some soft-deleted."""
    with throwaway("postgresql", postgres_admin_url()) as url:
        schema.upgrade(url, "4524473b46fb")
        insert_rows(url, make_rows(n_ticks=5_000, n_alerts=500))
        schema.upgrade(url, SOFT_DELETE)
        run_on(url, lambda c: c.execute(sa.text(
            "UPDATE market_data SET deleted_at = now() WHERE id % 50 = 0")))  # fmt: skip
        yield url


def _oids(connection: Connection) -> dict[str, int]:
    rows = connection.execute(
        sa.text("SELECT relname, oid FROM pg_class WHERE relname = ANY(:names)"),
        {"names": BUILT},
    )
    return {str(name): int(oid) for name, oid in rows}


def _shapes(connection: Connection) -> dict[str, dict[str, object]]:
    return {table: index_shapes(connection, table) for table in HEAD_INDEXES}


def test_indexes_built_beforehand_are_kept_by_the_upgrade(live_table: str) -> None:
    builds = schema.build_indexes_concurrently(live_table)

    assert [(b.name, b.built) for b in builds] == [(name, True) for name in BUILT]
    before = run_on(live_table, _oids)
    shapes = run_on(live_table, _shapes)
    assert shapes["market_data"]["ix_market_data_deleted_at"] == (("deleted_at",), DELETED)
    assert "ix_market_data_instrument_price" in shapes["market_data"]  # still f79e2702f75c
    # A second run finds them all built.
    assert not any(b.built for b in schema.build_indexes_concurrently(live_table))

    assert schema.upgrade(live_table, HEAD) == HEAD
    assert run_on(live_table, _oids) == before  # kept, not built again
    assert run_on(live_table, _shapes) == HEAD_INDEXES
    assert schema.build_indexes_concurrently(live_table) == []


async def _commit_a_write(engine: AsyncEngine) -> None:
    """A transaction committed after the holder's snapshot makes that snapshot older than
    the build's: only then does the build have to wait for it."""
    async with engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE instruments SET name = name WHERE id = 1")


async def _backend_waiting_in_build(observer: AsyncConnection) -> int:
    """The pid of the CREATE INDEX CONCURRENTLY once it waits for the old snapshot."""
    for _ in range(1200):
        pid = (
            await observer.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'CREATE INDEX CONCURRENTLY%'"
                )
            )
        ).scalar()
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the index build never waited: was it CONCURRENTLY?")


async def _write_while_building(url: str) -> tuple[set[str], int]:
    engine = create_engine(url)
    failure: list[BaseException] = []

    def build() -> None:
        try:
            schema.build_indexes_concurrently(url, lock_timeout_ms=120_000)
        except BaseException as exc:
            failure.append(exc)

    try:
        async with engine.connect() as holder, engine.connect() as observer:
            await holder.execution_options(isolation_level="REPEATABLE READ")
            # pg_stat_activity is read once per transaction: the observer needs a fresh one.
            await observer.execution_options(isolation_level="AUTOCOMMIT")
            await holder.exec_driver_sql("SELECT 1")  # takes the snapshot the build waits for
            await _commit_a_write(engine)
            thread = threading.Thread(target=build)
            thread.start()
            try:
                pid = await _backend_waiting_in_build(observer)
                locks = await observer.execute(
                    sa.text(
                        "SELECT mode FROM pg_locks WHERE pid = :pid "
                        "AND relation = 'market_data'::regclass"
                    ),
                    {"pid": pid},
                )
                modes = {str(mode) for (mode,) in locks}
                # A writer, with a short lock timeout, gets through while the build waits.
                async with engine.begin() as writer:
                    await writer.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                    await writer.execute(
                        sa.text(TICK).bindparams(sa.bindparam("t", type_=sa.DateTime(True))),
                        {"t": datetime(2030, 1, 1, tzinfo=UTC)},
                    )
            finally:
                await holder.rollback()
                await asyncio.to_thread(thread.join)
    finally:
        await engine.dispose()
    assert not failure, failure
    return modes, pid


def test_writers_go_on_while_the_index_builds(live_table: str) -> None:
    modes, _ = asyncio.run(_write_while_building(live_table))

    # SHARE UPDATE EXCLUSIVE does not conflict with INSERT's ROW EXCLUSIVE; a plain
    # CREATE INDEX would hold SHARE, which does.
    assert modes == {"ShareUpdateExclusiveLock"}
    latest = run_on(
        live_table,
        lambda c: c.execute(
            sa.text(
                "SELECT count(*) FROM market_data WHERE instrument_id = 1 "
                "AND timestamp >= '2030-01-01'"
            )
        ).scalar_one(),
    )
    assert latest == 1
    assert schema.upgrade(live_table, HEAD) == HEAD
    assert run_on(live_table, _shapes) == HEAD_INDEXES


async def _build_behind_an_old_snapshot(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as holder:
            await holder.execution_options(isolation_level="REPEATABLE READ")
            await holder.exec_driver_sql("SELECT 1")
            await _commit_a_write(engine)
            try:
                await asyncio.to_thread(schema.build_indexes_concurrently, url, lock_timeout_ms=300)
            finally:
                await holder.rollback()
    finally:
        await engine.dispose()


def test_a_build_behind_a_long_transaction_fails_fast_and_leaves_nothing(
    live_table: str,
) -> None:
    with pytest.raises(DatabaseError, match="lock timeout"):
        asyncio.run(_build_behind_an_old_snapshot(live_table))

    shapes = run_on(live_table, _shapes)
    assert NEW not in shapes["market_data"]  # no INVALID index left behind
    assert shapes["market_data"]["ix_market_data_instrument_price"] == (
        ("instrument_id", "price"),
        None,
    )
    # Once the transaction is gone, the build and the upgrade go through.
    assert [b.built for b in schema.build_indexes_concurrently(live_table)] == [True] * 4
    assert schema.upgrade(live_table, HEAD) == HEAD


def test_on_sqlite_the_build_is_refused_with_the_reason(database_url: str) -> None:
    schema.upgrade(database_url, SOFT_DELETE)
    if database_url.startswith("sqlite"):
        with pytest.raises(MigrationError, match="CONCURRENTLY is for PostgreSQL"):
            schema.build_indexes_concurrently(database_url)
    else:
        assert len(schema.build_indexes_concurrently(database_url)) == 4
    assert schema.upgrade(database_url, HEAD) == HEAD
