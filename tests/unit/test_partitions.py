"""Partition periods and names: UTC days, ISO weeks from Monday, calendar months."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tickvault.database.partitions import interval_of, is_partition_name, periods
from tickvault.errors import ValidationError

SUNDAY_LATE = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)


def test_periods_start_and_end_on_their_boundaries() -> None:
    day, week, month = interval_of("1d"), interval_of("1w"), interval_of("1mo")
    assert day.floor(SUNDAY_LATE) == datetime(2026, 11, 29, tzinfo=UTC)
    assert week.floor(SUNDAY_LATE) == datetime(2026, 11, 23, tzinfo=UTC)  # the Monday
    assert month.floor(SUNDAY_LATE) == datetime(2026, 11, 1, tzinfo=UTC)
    # 00:30 on Monday in UTC+2 is still Sunday in UTC.
    east = datetime(2026, 11, 30, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert day.floor(east) == datetime(2026, 11, 29, tzinfo=UTC)
    assert month.following(datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert week.following(datetime(2026, 11, 23, tzinfo=UTC)) == datetime(2026, 11, 30, tzinfo=UTC)


def test_periods_cover_first_to_last_inclusive_and_names() -> None:
    month = interval_of("1mo")
    spans = periods(month, datetime(2026, 11, 15, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
    assert [month.partition_name(start) for start, _ in spans] == [
        "market_data_p202611",
        "market_data_p202612",
        "market_data_p202701",
        "market_data_p202702",
    ]
    assert all(end == month.following(start) for start, end in spans)
    week = interval_of("1w")
    assert week.partition_name(week.floor(SUNDAY_LATE)) == "market_data_p20261123"


def test_names_and_unknown_interval() -> None:
    for name in ("market_data_p202611", "market_data_p20261123", "market_data_default"):
        assert is_partition_name(name)
    for name in ("market_data", "market_data_p2026", "alert_logs", "market_data_px"):
        assert not is_partition_name(name)
    with pytest.raises(ValidationError, match="use 1d, 1w or 1mo"):
        interval_of("1y")
