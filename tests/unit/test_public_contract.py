"""The names DESIGN.md promises to code outside the repository."""

import importlib

import pytest
from sqlalchemy import Double, Numeric

from tickvault.database.base import Base
from tickvault.models import AlertLog, AlertRule, Instrument, MarketData

PUBLIC = {
    "tickvault.database.base": ["Base"],
    "tickvault.database.mixins": ["TimestampMixin", "SoftDeleteMixin"],
    "tickvault.database.engine": ["create_engine", "create_session_factory"],
    "tickvault.models": ["Instrument", "AlertRule", "MarketData", "AlertLog"],
    "tickvault.models.market_data": ["MarketData"],
    "tickvault.models.alert_logs": ["AlertLog"],
}


@pytest.mark.parametrize(("module", "names"), PUBLIC.items())
def test_public_names_exist(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_models_are_at_head() -> None:
    assert Base.metadata.naming_convention["fk"]
    assert isinstance(MarketData.__table__.c.price.type, Double)
    assert isinstance(AlertLog.__table__.c.trigger_value.type, Double)
    assert type(AlertRule.__table__.c.threshold.type) is Numeric
    for table in (AlertRule, MarketData, AlertLog):
        for fk in table.__table__.foreign_keys:
            assert fk.ondelete == "RESTRICT"
    assert "deleted_at" in MarketData.__table__.c
    assert "deleted_at" in AlertLog.__table__.c
    assert "deleted_at" not in Instrument.__table__.c
    assert {ix.name for ix in MarketData.__table__.indexes} == {
        "ix_market_data_timestamp_instrument",
        "ix_market_data_instrument_timestamp",
        "ix_market_data_deleted_at",
    }
