"""What the HTTP API reads and writes.

Every number goes out rounded to 4 decimals (``101.1234``, never ``101.12340000000001``);
identifiers, text and timestamps are checked on the way in, so nothing a client sends can
reach the database in a form it would refuse. Each check is one the OpenAPI description
states (a pattern, a bound), so a request that the schema allows is one the API takes.
"""

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from tickvault.models.alert_logs import DELIVERY_STATUSES
from tickvault.models.alert_rule import CONDITIONS

MAX_TICKS_PER_REQUEST = 100_000
PRICE_LIMIT = Decimal("99999999.9999")


def round4(value: Any) -> Any:
    """Floats (and Decimals) rounded to 4 decimals, inside dicts and lists too."""
    if isinstance(value, float | Decimal):
        return round(float(value), 4)
    if isinstance(value, dict):
        return {key: round4(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [round4(item) for item in value]
    return value


def _round_number(value: float | Decimal | None) -> float | None:
    return None if value is None else round(float(value), 4)


Number = Annotated[float, PlainSerializer(_round_number, return_type=float)]
OptionalNumber = Annotated[float | None, PlainSerializer(_round_number, return_type=float | None)]


_DIGITS = re.compile(r"[+-]?[0-9]+")


def _json_integer(value: Any) -> Any:
    # JSON Schema counts 19.0 as an integer (a string or a boolean still is not one). In
    # a query string only digits are: pydantic would read "19.0" as 19 there too.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value) is None:
        raise PydanticCustomError(
            "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        )
    return value


InstrumentId = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(_json_integer)]
RowId = Annotated[int, Field(ge=1, le=2**63 - 1), BeforeValidator(_json_integer)]


# No control characters, and something besides spaces (which are stripped). Checked here
# with Python's re, the dialect schemathesis and hypothesis generate from; the OpenAPI
# pattern says the same to every other client.
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f\s][^\x00-\x1f\x7f]*$"
_PLAIN_TEXT = re.compile(PLAIN_TEXT)


def _plain_text(value: str) -> str:
    # PostgreSQL refuses NUL; a lone surrogate cannot be encoded as UTF-8 by either engine.
    if not _PLAIN_TEXT.match(value) or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must hold a visible character and no control characters")
    return value.strip()


def _text(max_length: int) -> Any:
    # The length is the text's as sent (before stripping), as the schema's maxLength reads it.
    return Annotated[
        str,
        Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": PLAIN_TEXT}),
        AfterValidator(_plain_text),
    ]


Symbol = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    # Pydantic would read "0.5" as seconds since the epoch; the API speaks ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError(
            "expected an ISO 8601 date and time with a zone, e.g. 2024-05-06T13:30:00Z"
        )
    return value


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is before the calendar's first instant in UTC (and the last
        # day of 9999 behind UTC after its last): no stored time lies beyond, so the bound is
        # the calendar's end.
        return EARLIEST if value.year == 1 else LATEST


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
Interval = Literal["1s", "1m", "5m", "15m", "1h", "1d"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page; pass ``next_cursor`` back as ``cursor`` for the next (null on the last)."""

    items: list[T]
    next_cursor: str | None


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    # Strict: 0 is not false and "5" is not 5; what the schema says is what is accepted.
    model_config = ConfigDict(extra="forbid", strict=True)


# -- instruments -------------------------------------------------------------------------


class InstrumentCreate(_In):
    symbol: Symbol
    name: _text(128)  # type: ignore[valid-type]
    exchange: _text(32) | None = None  # type: ignore[valid-type]
    asset_class: _text(16) = "equity"  # type: ignore[valid-type]
    currency: Currency = "USD"


class InstrumentUpdate(_In):
    is_active: bool


class InstrumentOut(_Out):
    id: int
    symbol: str
    name: str
    exchange: str | None
    asset_class: str
    currency: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


# -- market data -------------------------------------------------------------------------


class TickBatch(_In):
    ticks: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_TICKS_PER_REQUEST,
        description=(
            "Ticks as objects: `instrument_id` or `symbol`; `timestamp` (ISO 8601 with a time "
            "zone); `price`, `bid`, `ask`, `open_price`, `high_price`, `low_price` (numbers, "
            "optional); `volume` (whole number, optional). A tick that cannot be stored is "
            "rejected with its position and reason; the others are stored."
        ),
        examples=[[{"symbol": "AAPL", "timestamp": "2024-05-06T13:30:00Z", "price": 189.2}]],
    )


class RejectionOut(_Out):
    position: int
    reason: str


class BatchFailureOut(_Out):
    first_position: int
    last_position: int
    rows: int
    reason: str


class IngestResult(_Out):
    accepted: int
    rejected: int
    alerts: int
    ids: list[int] = Field(
        default=[], description="Ids of the stored ticks, in the order they were sent."
    )
    rejections: list[RejectionOut]
    failed_batches: list[BatchFailureOut] = []


class TickOut(_Out):
    id: int
    instrument_id: int
    timestamp: datetime
    price: OptionalNumber
    bid: OptionalNumber
    ask: OptionalNumber
    open_price: OptionalNumber
    high_price: OptionalNumber
    low_price: OptionalNumber
    volume: int | None
    deleted_at: datetime | None


class BarOut(_Out):
    start: datetime
    end: datetime
    open: Number
    high: Number
    low: Number
    close: Number
    volume: int
    vwap: OptionalNumber
    ticks: int


# -- alerts ------------------------------------------------------------------------------


def _threshold(value: Any) -> Decimal:
    # A JSON number, as the schema says (not a string); kept to 4 decimals, as the column
    # NUMERIC(12,4) keeps it and as every number the API writes back is. Within the bounds,
    # rounding never carries past 99,999,999.9999.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    try:
        number = float(value)  # compared as a double, as a JSON Schema validator compares it
    except OverflowError:  # an integer no double holds
        number = math.inf
    if not -float(PRICE_LIMIT) <= number <= float(PRICE_LIMIT):  # NaN compares false
        raise ValueError(f"must be a number within ±{PRICE_LIMIT:,}")
    return Decimal(repr(round(number, 4))).quantize(Decimal("0.0001"))


Threshold = Annotated[
    Decimal,
    PlainValidator(_threshold),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": -float(PRICE_LIMIT),
            "maximum": float(PRICE_LIMIT),
            "description": "Kept to 4 decimals.",
        }
    ),
]
Cooldown = Annotated[int, Field(ge=0, le=366 * 86400), BeforeValidator(_json_integer)]


class AlertRuleCreate(_In):
    name: _text(128)  # type: ignore[valid-type]
    instrument_id: InstrumentId
    condition: Literal[CONDITIONS]  # type: ignore[valid-type]
    threshold: Threshold
    cooldown_seconds: Cooldown = 60
    is_active: bool = True


class AlertRuleUpdate(_In):
    name: _text(128) | None = None  # type: ignore[valid-type]
    threshold: Threshold | None = None
    cooldown_seconds: Cooldown | None = None
    is_active: bool | None = None


class AlertRuleOut(_Out):
    id: int
    name: str
    instrument_id: int
    condition: str
    threshold: Number
    cooldown_seconds: int
    is_active: bool
    created_at: datetime
    updated_at: datetime


class AlertLogOut(_Out):
    id: int
    rule_id: int
    instrument_id: int
    timestamp: datetime
    trigger_value: OptionalNumber
    threshold_value: OptionalNumber
    fired_status: str
    delivery_status: str
    evaluation_time_ms: OptionalNumber
    message: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class DeliveryUpdate(_In):
    delivery_status: Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]


# -- service -----------------------------------------------------------------------------


class ReplicaHealth(BaseModel):
    """The read replica (TICKVAULT_READ_REPLICA_URL): reads go to the primary unless it is
    ``streaming``. ``lag_bytes``: the primary's WAL it has not replayed yet; ``lag_seconds``:
    since the last transaction it replayed, while it has received WAL not yet replayed."""

    state: Literal["streaming", "unreachable", "not a standby"]
    url: str
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    detail: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    database: Literal["reachable", "unreachable"]
    revision: str | None
    head: str
    detail: str | None = None
    # Only with a read replica configured.
    replica: ReplicaHealth | None = Field(default=None, exclude_if=lambda value: value is None)
