"""Prices from DECIMAL(12,4) to FLOAT (double precision).

A double holds 15 significant digits and DECIMAL(12,4) needs 12, so every value comes
back exactly when rounded to 4 decimals. The downgrade first checks that every value fits
DECIMAL(12,4) and is finite, and stops before changing anything if one does not.

Revision ID: 4a24cf1de90a
Revises: df856072bded
Create Date: 2024-01-03 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tickvault.migrations._helpers import is_sqlite, require_decimal_12_4

revision: str = "4a24cf1de90a"
down_revision: str | None = "df856072bded"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {
    "market_data": ["price", "bid", "ask", "open_price", "high_price", "low_price"],
    "alert_logs": ["trigger_value", "threshold_value"],
}


def _retype(table: str, columns: list[str], *, to_float: bool) -> None:
    old, new = (sa.Numeric(12, 4), sa.Double()) if to_float else (sa.Double(), sa.Numeric(12, 4))
    if is_sqlite():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, existing_type=old, type_=new, existing_nullable=True)
        return
    # One ALTER TABLE for all columns: PostgreSQL rewrites the table and rebuilds its
    # indexes once, not once per column.
    sql_type, using = (
        ("DOUBLE PRECISION", "{c}::double precision")
        if to_float
        else ("NUMERIC(12, 4)", "round({c}::numeric, 4)")
    )
    changes = ", ".join(
        f"ALTER COLUMN {c} TYPE {sql_type} USING {using.format(c=c)}" for c in columns
    )
    op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        _retype(table, columns, to_float=True)


def downgrade() -> None:
    require_decimal_12_4(COLUMNS)
    for table, columns in COLUMNS.items():
        if is_sqlite():
            # SQLite keeps the REAL value under a NUMERIC column: round it here, in one
            # pass over the table (round(NULL) is NULL).
            op.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = round({c}, 4)" for c in columns))
        _retype(table, columns, to_float=False)
