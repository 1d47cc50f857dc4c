"""The UTC datetime type and the DECIMAL(12,4) -> FLOAT -> DECIMAL(12,4) round trip."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from tickvault.database.types import UTCDateTime

TOKYO = timezone(timedelta(hours=9))


def test_aware_values_are_stored_as_utc() -> None:
    value = datetime(2024, 1, 2, 9, 0, tzinfo=TOKYO)
    on_pg = UTCDateTime().process_bind_param(value, postgresql.dialect())
    on_sqlite = UTCDateTime().process_bind_param(value, sqlite.dialect())
    assert on_pg == datetime(2024, 1, 2, 0, 0, tzinfo=UTC)
    assert on_sqlite == datetime(2024, 1, 2, 0, 0)  # naive UTC text in SQLite


def test_values_read_back_aware_in_utc() -> None:
    assert UTCDateTime().process_result_value(datetime(2024, 1, 2), sqlite.dialect()) == (
        datetime(2024, 1, 2, tzinfo=UTC)
    )
    read = UTCDateTime().process_result_value(
        datetime(2024, 1, 2, 9, tzinfo=TOKYO), postgresql.dialect()
    )
    assert read is not None
    assert read.tzinfo is UTC
    assert read.hour == 0


@pytest.mark.parametrize("bad", [datetime(2024, 1, 1), "2024-01-01T00:00:00Z", 1704067200])
def test_naive_or_non_datetime_values_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        UTCDateTime().process_bind_param(bad, sqlite.dialect())


DECIMAL_12_4 = st.decimals(
    min_value=Decimal("-99999999.9999"),
    max_value=Decimal("99999999.9999"),
    places=4,
    allow_nan=False,
    allow_infinity=False,
)


@given(DECIMAL_12_4)
def test_every_decimal_12_4_survives_a_trip_through_a_double(value: Decimal) -> None:
    as_float = float(value)
    assert Decimal(f"{as_float:.4f}") == value
    # What PostgreSQL's round(x::numeric, 4) does on the way back.
    assert Decimal(repr(as_float)).quantize(Decimal("0.0001")) == value
