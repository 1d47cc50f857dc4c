"""Market data: one tick or quote of an instrument at a point in time."""

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Double, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tickvault.database.base import Base
from tickvault.database.mixins import SoftDeleteMixin, TimestampMixin, deleted_at_index
from tickvault.database.types import UTCDateTime

if TYPE_CHECKING:
    from tickvault.models.instrument import Instrument

# BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the rowid alias.
BigIntegerPK = BigInteger().with_variant(Integer(), "sqlite")


class MarketData(TimestampMixin, SoftDeleteMixin, Base):
    __tablename__ = "market_data"
    __table_args__ = (
        Index("ix_market_data_timestamp_instrument", "timestamp", "instrument_id"),
        # Latest tick, a time range, the previous tick: one index probe each. The id makes
        # the order total, for ticks that share a timestamp (a7c3e9d15b42).
        Index("ix_market_data_instrument_timestamp", "instrument_id", "timestamp", "id"),
        deleted_at_index("market_data"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True)
    instrument_id: Mapped[int] = mapped_column(ForeignKey("instruments.id", ondelete="RESTRICT"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    price: Mapped[float | None] = mapped_column(Double)
    bid: Mapped[float | None] = mapped_column(Double)
    ask: Mapped[float | None] = mapped_column(Double)
    open_price: Mapped[float | None] = mapped_column(Double)
    high_price: Mapped[float | None] = mapped_column(Double)
    low_price: Mapped[float | None] = mapped_column(Double)
    volume: Mapped[int | None] = mapped_column(BigInteger)

    instrument: Mapped["Instrument"] = relationship()

    def __repr__(self) -> str:
        return (
            f"MarketData(id={self.id!r}, instrument_id={self.instrument_id!r}, "
            f"timestamp={self.timestamp!r}, price={self.price!r})"
        )
