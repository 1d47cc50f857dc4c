"""Columns shared by tickvault's models: timestamps and soft delete."""

from datetime import datetime

from sqlalchemy import ColumnElement, Index, func, text
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from tickvault.database.types import UTCDateTime, utcnow


class TimestampMixin:
    """``created_at`` and ``updated_at``, both UTC; ``updated_at`` moves on every UPDATE."""

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now(), nullable=False
    )


def deleted_at_index(table: str) -> Index:
    """``ix_<table>_deleted_at``, partial (``WHERE deleted_at IS NOT NULL``) on both engines.

    Only soft-deleted rows are in it, so writing a live row touches no soft-delete index;
    purge (``deleted_at < cutoff``) and "list deleted" (``IS NOT NULL``) imply its predicate
    and still use it. Add it to the model's ``__table_args__``.
    """
    deleted = text("deleted_at IS NOT NULL")
    return Index(
        f"ix_{table}_deleted_at", "deleted_at", sqlite_where=deleted, postgresql_where=deleted
    )


class SoftDeleteMixin:
    """``deleted_at``: a row is hidden from default reads once it is set::

    tick.soft_delete()   # hides the row; a second call keeps the first timestamp
    tick.restore()       # shows it again; harmless when not deleted
    select(MarketData).where(MarketData.is_deleted)   # also usable in queries
    """

    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @hybrid_property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @is_deleted.inplace.expression
    @classmethod
    def _is_deleted_expression(cls) -> ColumnElement[bool]:
        return cls.deleted_at.is_not(None)

    @hybrid_property
    def is_active(self) -> bool:
        return self.deleted_at is None

    @is_active.inplace.expression
    @classmethod
    def _is_active_expression(cls) -> ColumnElement[bool]:
        return cls.deleted_at.is_(None)

    def soft_delete(self, at: datetime | None = None) -> None:
        """Mark the row deleted now (or ``at``); a row already deleted keeps its timestamp."""
        if self.deleted_at is None:
            self.deleted_at = at if at is not None else utcnow()

    def restore(self) -> None:
        """Make the row visible again; harmless on a row that is not deleted."""
        self.deleted_at = None
