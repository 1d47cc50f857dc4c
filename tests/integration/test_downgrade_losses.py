"""What a downgrade drops, as rehearsed on a scratch SQLite database, is what the real
downgrade drops, step by step down the whole chain, on both engines."""

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tests.integration.migration_data import run_on
from tickvault.services import schema
from tickvault.services.downgrade_losses import SCRATCH_URL, Loss, rehearse


def _columns(connection: Connection) -> set[tuple[str, str | None]]:
    """Each table as (table, None) and each of its columns as (table, column)."""
    inspector = sa.inspect(connection)
    found: set[tuple[str, str | None]] = set()
    for table in inspector.get_table_names():
        if table != schema.VERSION_TABLE:
            found.add((table, None))
            found |= {(table, column["name"]) for column in inspector.get_columns(table)}
    return found


def _dropped(before: set[tuple[str, str | None]], after: set[tuple[str, str | None]]) -> set[Loss]:
    """Tables that went, and columns that went from tables that stayed."""
    gone_tables = {table for table, column in before - after if column is None}
    return {
        Loss(table, column)
        for table, column in before - after
        if column is None or table not in gone_tables
    }


def test_the_rehearsal_names_what_each_real_downgrade_step_drops(database_url: str) -> None:
    schema.upgrade(database_url, "head")
    seen: dict[str, set[Loss]] = {}
    while (current := schema.current_revision(database_url)) is not None:
        target, predicted = rehearse(schema.alembic_config(SCRATCH_URL), current, "-1")
        before = run_on(database_url, _columns)
        schema.downgrade(database_url, "-1")
        assert schema.current_revision(database_url) == target
        actual = _dropped(before, run_on(database_url, _columns))
        assert set(predicted) == actual, current
        assert len(predicted) == len(actual), current
        seen[current] = actual

    # Not vacuous: the steps that drop something are seen to.
    assert seen["c2f8d4b6e913"] == {Loss("write_receipts", None)}
    assert seen["f79e2702f75c"] == {
        Loss("market_data", "deleted_at"),
        Loss("alert_logs", "deleted_at"),
    }
    assert {loss.table for loss in seen["4524473b46fb"]} == {
        "instruments",
        "alert_rules",
        "market_data",
        "alert_logs",
    }
    assert seen["a7c3e9d15b42"] == seen["4a24cf1de90a"] == seen["df856072bded"] == set()
