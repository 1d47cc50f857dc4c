"""Soft delete and RESTRICT foreign keys.

Adds ``deleted_at`` (with an index) to market_data and alert_logs, and turns every foreign
key from ON DELETE CASCADE into ON DELETE RESTRICT: deleting a parent that still has
children now fails instead of silently taking them along. SQLite recreates each table
(batch mode) with foreign keys switched off; env.py checks them before the commit.

The downgrade deletes nothing: soft-deleted rows become visible again, and it says how
many.

Revision ID: f79e2702f75c
Revises: 4a24cf1de90a
Create Date: 2024-01-04 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from tickvault.migrations._helpers import count_soft_deleted, logger

revision: str = "f79e2702f75c"
down_revision: str | None = "4a24cf1de90a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> [(column, referred table)]
FOREIGN_KEYS = {
    "alert_rules": [("instrument_id", "instruments")],
    "market_data": [("instrument_id", "instruments")],
    "alert_logs": [("rule_id", "alert_rules"), ("instrument_id", "instruments")],
}
SOFT_DELETE_TABLES = ("market_data", "alert_logs")


def _set_ondelete(batch: BatchOperations, table: str, action: str) -> None:
    for column, referred in FOREIGN_KEYS[table]:
        name = f"fk_{table}_{column}_{referred}"
        batch.drop_constraint(name, type_="foreignkey")
        batch.create_foreign_key(name, referred, [column], ["id"], ondelete=action)


# One batch per table: on SQLite each batch that changes a foreign key recreates the
# table, so the column change rides along in the same copy.


def upgrade() -> None:
    for table in FOREIGN_KEYS:
        with op.batch_alter_table(table) as batch:
            if table in SOFT_DELETE_TABLES:
                batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
                batch.create_index(f"ix_{table}_deleted_at", ["deleted_at"])
            _set_ondelete(batch, table, "RESTRICT")


def downgrade() -> None:
    for table in FOREIGN_KEYS:
        with op.batch_alter_table(table) as batch:
            _set_ondelete(batch, table, "CASCADE")
            if table in SOFT_DELETE_TABLES:
                restored = count_soft_deleted(table)
                if restored:
                    logger.warning(
                        "%s: %d soft-deleted rows become visible again (no deleted_at below %s)",
                        table,
                        restored,
                        revision,
                    )
                batch.drop_index(f"ix_{table}_deleted_at")
                batch.drop_column("deleted_at")
