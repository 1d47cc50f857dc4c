"""Read path: (instrument_id, timestamp, id) back, partial soft-delete indexes.

df856072bded dropped the one index that serves the latest tick of an instrument, a time
range of one instrument and the previous tick for alert rules, and kept (instrument_id,
price), which no query needs. This swaps the one for the other (still two indexes per tick;
the id makes the order total, so "latest" is one backward index probe), makes the
deleted_at indexes partial (a live row touches neither) and indexes alert_rules'
foreign key, the only one without an index.

On PostgreSQL the new indexes can be built beforehand without blocking writers
(``tickvault db build-indexes``, see ``tickvault.migrations.online``): this revision then
finds them built and keeps them. The downgrade restores f79e2702f75c exactly.

Revision ID: a7c3e9d15b42
Revises: f79e2702f75c
Create Date: 2024-01-05 00:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tickvault.migrations._helpers import is_offline
from tickvault.migrations.online import ONLINE_INDEXES, OnlineIndex, existing

revision: str = "a7c3e9d15b42"
down_revision: str | None = "f79e2702f75c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATED = ONLINE_INDEXES[revision]
# What f79e2702f75c had in their place: name -> (table, columns); all full indexes.
REPLACED = {
    "ix_market_data_instrument_price": ("market_data", ["instrument_id", "price"]),
    "ix_market_data_deleted_at": ("market_data", ["deleted_at"]),
    "ix_alert_logs_deleted_at": ("alert_logs", ["deleted_at"]),
}


def _create(index: OnlineIndex) -> None:
    where: dict[str, Any] = {}
    if index.where:
        predicate = sa.text(index.where)
        where = {"sqlite_where": predicate, "postgresql_where": predicate}
    op.create_index(index.name, index.table, list(index.columns), **where)


def _ensure(index: OnlineIndex) -> None:
    """Create ``index``, or keep it if PostgreSQL already holds it built as defined."""
    if op.get_context().dialect.name == "postgresql" and not is_offline():
        # A build-indexes run cut short between its build and its rename leaves this.
        op.execute(f"DROP INDEX IF EXISTS {index.name}_new")
        found = existing(op.get_bind(), index)
        if found == (True, True):
            return
        present = found is not None  # the older definition, or an INVALID leftover
    else:
        present = index.name in REPLACED
    if present:
        op.drop_index(index.name, table_name=index.table)
    _create(index)


def upgrade() -> None:
    for index in CREATED:
        _ensure(index)
    op.drop_index("ix_market_data_instrument_price", table_name="market_data")


def downgrade() -> None:
    for index in CREATED:
        op.drop_index(index.name, table_name=index.table)
    for name, (table, columns) in REPLACED.items():
        op.create_index(name, table, columns)
