"""Reduce indexes: market_data 5 -> 2, alert_logs 10 -> 4.

Every index dropped here is a prefix of one that stays, or serves a query the platform
does not run; each foreign key column stays the leading column of some index.

Revision ID: df856072bded
Revises: 4524473b46fb
Create Date: 2024-01-02 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "df856072bded"
down_revision: str | None = "4524473b46fb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP_DESC = sa.text('"timestamp" DESC')

# name -> columns, as the baseline created them
DROPPED: dict[str, dict[str, list[str | sa.TextClause]]] = {
    "market_data": {
        "ix_market_data_timestamp": ["timestamp"],
        "ix_market_data_instrument": ["instrument_id"],
        "ix_market_data_price": ["price"],
        "ix_market_data_latest": ["instrument_id", TIMESTAMP_DESC],
    },
    "alert_logs": {
        "ix_alert_logs_rule": ["rule_id"],
        "ix_alert_logs_timestamp_instrument": ["timestamp", "instrument_id"],
        "ix_alert_logs_timestamp_rule": ["timestamp", "rule_id"],
        "ix_alert_logs_fired_status": ["fired_status"],
        "ix_alert_logs_delivery_status": ["delivery_status"],
        "ix_alert_logs_evaluation_time": ["evaluation_time_ms"],
        "ix_alert_logs_recent": ["rule_id", TIMESTAMP_DESC],
    },
}
ADDED: dict[str, dict[str, list[str | sa.TextClause]]] = {
    "market_data": {"ix_market_data_instrument_price": ["instrument_id", "price"]},
    "alert_logs": {"ix_alert_logs_status": ["fired_status", "delivery_status"]},
}


def upgrade() -> None:
    for table in DROPPED:
        for name, columns in ADDED[table].items():
            op.create_index(name, table, columns)
        for name in DROPPED[table]:
            op.drop_index(name, table_name=table)


def downgrade() -> None:
    for table in DROPPED:
        for name, columns in DROPPED[table].items():
            op.create_index(name, table, columns)
        for name in ADDED[table]:
            op.drop_index(name, table_name=table)
