"""The UTC datetime type. (The DECIMAL(12,4) -> FLOAT -> DECIMAL(12,4) round trip is tested
through the databases themselves, in tests/integration/test_migration_round_trip.py.)"""

from datetime import UTC, datetime, timedelta, timezone

import pytest
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
