"""Write receipts: the table that makes file loads resumable and HTTP writes idempotent.

One row per file load (content fingerprint, rows consumed so far, done or not) and per
request sent with an ``Idempotency-Key`` (its key, a hash of the request, its response),
written in the same transaction as the rows it accounts for (``tickvault.models``'s
``WriteReceipt``). A new table: no lock on the others, nothing to move. The downgrade drops
it (``tickvault db downgrade`` asks first when it holds rows).

Revision ID: c2f8d4b6e913
Revises: a7c3e9d15b42
Create Date: 2024-01-06 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c2f8d4b6e913"
down_revision: str | None = "a7c3e9d15b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "write_receipts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("rows_consumed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_stored", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("done", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_write_receipts")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_write_receipts_kind")),
        sa.CheckConstraint("kind IN ('file', 'request')", name=op.f("ck_write_receipts_kind")),
    )
    op.create_index("ix_write_receipts_created_at", "write_receipts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_write_receipts_created_at", table_name="write_receipts")
    op.drop_table("write_receipts")
