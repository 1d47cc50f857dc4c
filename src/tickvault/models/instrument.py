"""Instruments: the things that trade. Deactivated through ``is_active``, never deleted."""

from typing import TYPE_CHECKING

from sqlalchemy import CHAR, Boolean, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tickvault.database.base import Base
from tickvault.database.mixins import TimestampMixin

if TYPE_CHECKING:
    from tickvault.models.alert_rule import AlertRule


class Instrument(TimestampMixin, Base):
    __tablename__ = "instruments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    exchange: Mapped[str | None] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(16), default="equity", server_default="equity")
    currency: Mapped[str] = mapped_column(CHAR(3), default="USD", server_default="USD")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    # RESTRICT foreign keys guard the children: the ORM must not try to null them out.
    alert_rules: Mapped[list["AlertRule"]] = relationship(
        back_populates="instrument", passive_deletes="all", lazy="raise"
    )

    def __repr__(self) -> str:
        return f"Instrument(id={self.id!r}, symbol={self.symbol!r})"
