"""Alert logs: every evaluation of a rule that fired, was suppressed or cleared."""

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Double, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tickvault.database.base import Base
from tickvault.database.mixins import SoftDeleteMixin, TimestampMixin, deleted_at_index
from tickvault.database.types import UTCDateTime
from tickvault.models.market_data import BigIntegerPK

if TYPE_CHECKING:
    from tickvault.models.alert_rule import AlertRule
    from tickvault.models.instrument import Instrument

FIRED_STATUSES = ("fired", "suppressed", "cleared")
DELIVERY_STATUSES = ("pending", "sent", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


class AlertLog(TimestampMixin, SoftDeleteMixin, Base):
    __tablename__ = "alert_logs"
    __table_args__ = (
        CheckConstraint(_one_of("fired_status", FIRED_STATUSES), name="fired_status"),
        CheckConstraint(_one_of("delivery_status", DELIVERY_STATUSES), name="delivery_status"),
        Index("ix_alert_logs_timestamp", "timestamp"),
        Index("ix_alert_logs_instrument_timestamp", "instrument_id", "timestamp"),
        Index("ix_alert_logs_rule_timestamp", "rule_id", "timestamp"),
        Index("ix_alert_logs_status", "fired_status", "delivery_status"),
        deleted_at_index("alert_logs"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="RESTRICT"))
    instrument_id: Mapped[int] = mapped_column(ForeignKey("instruments.id", ondelete="RESTRICT"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    trigger_value: Mapped[float | None] = mapped_column(Double)
    threshold_value: Mapped[float | None] = mapped_column(Double)
    fired_status: Mapped[str] = mapped_column(String(16))
    delivery_status: Mapped[str] = mapped_column(
        String(16), default="pending", server_default="pending"
    )
    evaluation_time_ms: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str | None] = mapped_column(Text)

    rule: Mapped["AlertRule"] = relationship(back_populates="alert_logs")
    instrument: Mapped["Instrument"] = relationship()

    def __repr__(self) -> str:
        return (
            f"AlertLog(id={self.id!r}, rule_id={self.rule_id!r}, "
            f"fired_status={self.fired_status!r})"
        )
