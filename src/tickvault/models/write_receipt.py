"""Write receipts: what makes a write exactly-once (revision c2f8d4b6e913).

One row per file load (``kind='file'``: the content fingerprint as key, the rows of the
file consumed so far, done or not) and per HTTP request sent with an ``Idempotency-Key``
(``kind='request'``: the client's key, a hash of the request, its response). A receipt is
written in the same transaction as the rows it accounts for, so it never claims a row that
was not stored, nor misses one that was.
"""

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from tickvault.database.base import Base
from tickvault.database.mixins import TimestampMixin
from tickvault.models.market_data import BigIntegerPK

RECEIPT_KINDS = ("file", "request")


class WriteReceipt(TimestampMixin, Base):
    __tablename__ = "write_receipts"
    __table_args__ = (
        UniqueConstraint("kind", "key"),
        CheckConstraint("kind IN ('file', 'request')", name="kind"),
        # Expired request receipts are purged by age.
        Index("ix_write_receipts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 (hex) of the file's content, or of the request's method, path and body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(1024))  # file name, or method and path
    rows_consumed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    rows_stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    response: Mapped[str | None] = mapped_column(Text)  # JSON, for requests

    def __repr__(self) -> str:
        return f"WriteReceipt(kind={self.kind!r}, key={self.key!r}, done={self.done!r})"
