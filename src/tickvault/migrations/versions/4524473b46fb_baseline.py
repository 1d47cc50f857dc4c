"""Baseline: the schema before the optimization.

DECIMAL(12,4) prices, 5 indexes on market_data and 10 on alert_logs, every foreign key
ON DELETE CASCADE.

Revision ID: 4524473b46fb
Revises:
Create Date: 2024-01-01 00:00:00
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "4524473b46fb"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRICE = sa.Numeric(12, 4)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column[datetime]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "instruments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("exchange", sa.String(32), nullable=True),
        sa.Column("asset_class", sa.String(16), server_default="equity", nullable=False),
        sa.Column("currency", sa.CHAR(3), server_default="USD", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("symbol", name=op.f("uq_instruments_symbol")),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("condition", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Numeric(12, 4), nullable=False),
        sa.Column("cooldown_seconds", sa.Integer(), server_default="60", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint(
            "condition IN ('price_above', 'price_below', 'pct_change_above', "
            "'pct_change_below', 'spread_above', 'volume_above')",
            name=op.f("ck_alert_rules_condition"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_alert_rules_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_table(
        "market_data",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", PRICE, nullable=True),
        sa.Column("bid", PRICE, nullable=True),
        sa.Column("ask", PRICE, nullable=True),
        sa.Column("open_price", PRICE, nullable=True),
        sa.Column("high_price", PRICE, nullable=True),
        sa.Column("low_price", PRICE, nullable=True),
        sa.Column("volume", sa.BigInteger(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_market_data_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_data")),
    )
    op.create_index("ix_market_data_timestamp", "market_data", ["timestamp"])
    op.create_index("ix_market_data_instrument", "market_data", ["instrument_id"])
    op.create_index("ix_market_data_price", "market_data", ["price"])
    op.create_index(
        "ix_market_data_latest", "market_data", ["instrument_id", sa.text('"timestamp" DESC')]
    )
    op.create_index(
        "ix_market_data_timestamp_instrument", "market_data", ["timestamp", "instrument_id"]
    )
    op.create_table(
        "alert_logs",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger_value", PRICE, nullable=True),
        sa.Column("threshold_value", PRICE, nullable=True),
        sa.Column("fired_status", sa.String(16), nullable=False),
        sa.Column("delivery_status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("evaluation_time_ms", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "fired_status IN ('fired', 'suppressed', 'cleared')",
            name=op.f("ck_alert_logs_fired_status"),
        ),
        sa.CheckConstraint(
            "delivery_status IN ('pending', 'sent', 'failed')",
            name=op.f("ck_alert_logs_delivery_status"),
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alert_logs_rule_id_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_alert_logs_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_logs")),
    )
    op.create_index("ix_alert_logs_timestamp", "alert_logs", ["timestamp"])
    op.create_index(
        "ix_alert_logs_instrument_timestamp", "alert_logs", ["instrument_id", "timestamp"]
    )
    op.create_index("ix_alert_logs_rule_timestamp", "alert_logs", ["rule_id", "timestamp"])
    op.create_index("ix_alert_logs_rule", "alert_logs", ["rule_id"])
    op.create_index(
        "ix_alert_logs_timestamp_instrument", "alert_logs", ["timestamp", "instrument_id"]
    )
    op.create_index("ix_alert_logs_timestamp_rule", "alert_logs", ["timestamp", "rule_id"])
    op.create_index("ix_alert_logs_fired_status", "alert_logs", ["fired_status"])
    op.create_index("ix_alert_logs_delivery_status", "alert_logs", ["delivery_status"])
    op.create_index("ix_alert_logs_evaluation_time", "alert_logs", ["evaluation_time_ms"])
    op.create_index("ix_alert_logs_recent", "alert_logs", ["rule_id", sa.text('"timestamp" DESC')])


def downgrade() -> None:
    op.drop_table("alert_logs")
    op.drop_table("market_data")
    op.drop_table("alert_rules")
    op.drop_table("instruments")
