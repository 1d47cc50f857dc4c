"""Alert rules: a condition on an instrument's ticks, with a threshold and a cooldown."""

from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, Numeric, String, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tickvault.database.base import Base
from tickvault.database.mixins import TimestampMixin

if TYPE_CHECKING:
    from tickvault.models.alert_logs import AlertLog
    from tickvault.models.instrument import Instrument

CONDITIONS = (
    "price_above",
    "price_below",
    "pct_change_above",
    "pct_change_below",
    "spread_above",
    "volume_above",
)


class AlertRule(TimestampMixin, Base):
    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint(
            "condition IN ({})".format(", ".join(f"'{c}'" for c in CONDITIONS)), name="condition"
        ),
        # The rules of a tick's instrument, and RESTRICT checks on instruments (a7c3e9d15b42).
        Index("ix_alert_rules_instrument", "instrument_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    instrument_id: Mapped[int] = mapped_column(ForeignKey("instruments.id", ondelete="RESTRICT"))
    condition: Mapped[str] = mapped_column(String(32))
    # A threshold is a configured value, not a measurement: it stays exact.
    threshold: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    cooldown_seconds: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    instrument: Mapped["Instrument"] = relationship(back_populates="alert_rules")
    # Load with selectinload(); soft-deleted logs are left out unless asked for.
    alert_logs: Mapped[list["AlertLog"]] = relationship(
        back_populates="rule", passive_deletes="all", lazy="raise"
    )

    def __repr__(self) -> str:
        return f"AlertRule(id={self.id!r}, condition={self.condition!r})"
