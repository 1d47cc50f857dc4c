"""tickvault's ORM models, at the head revision of the schema."""

from tickvault.models.alert_logs import AlertLog
from tickvault.models.alert_rule import AlertRule
from tickvault.models.instrument import Instrument
from tickvault.models.market_data import MarketData
from tickvault.models.write_receipt import WriteReceipt

__all__ = ["AlertLog", "AlertRule", "Instrument", "MarketData", "WriteReceipt"]
