"""Cursors as the API shows them: strings that say where the next page starts.

A cursor is a position, and every string its pattern allows is one: ``1234`` (after id
1234) for lists by id, ``1714998600250000_1234`` (after the tick at that many microseconds
since the Unix epoch, then id 1234) for time ranges. A position past the last row gives an
empty page; one before the first, the first page.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel

from tickvault.api.schemas import EARLIEST, LATEST, Page
from tickvault.repositories.base import Page as RepositoryPage

M = TypeVar("M", bound=BaseModel)

LAST_ID = 2**63 - 1  # bigint ids (ticks, alert logs)
LAST_INT_ID = 2**31 - 1  # integer ids (instruments, alert rules)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

NEXT = "`next_cursor` of the previous page."
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
Cursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$", description=NEXT)]
TimeCursor = Annotated[
    str | None,
    Query(pattern=r"^-?[0-9]{1,18}_[0-9]{1,19}$", description=NEXT),
]


def id_cursor(cursor: str | None, last: int = LAST_ID) -> int | None:
    """``"1234"`` → 1234; past the last id the column holds, its last id."""
    return None if cursor is None else min(int(cursor), last)


def time_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """``"1714998600250000_1234"`` → (2024-05-06T12:30:00.25Z, 1234)."""
    if cursor is None:
        return None
    micros, row_id = (int(part) for part in cursor.split("_"))
    if micros < _micros(EARLIEST):
        return None
    if micros > _micros(LATEST):
        return LATEST, LAST_ID
    return EPOCH + timedelta(microseconds=micros), min(row_id, LAST_ID)


def page_of(model: type[M], page: RepositoryPage[Any, Any]) -> Page[M]:
    """A repository's page as the API shows it: ``model`` rows and a cursor string."""
    cursor = page.next_cursor
    return Page(
        items=[model.model_validate(row) for row in page.items],
        next_cursor=show_time_cursor(cursor)
        if isinstance(cursor, tuple)
        else show_id_cursor(cursor),
    )


def show_time_cursor(cursor: tuple[datetime, int] | None) -> str | None:
    if cursor is None:
        return None
    when, row_id = cursor
    return f"{_micros(when)}_{row_id}"


def show_id_cursor(cursor: int | None) -> str | None:
    return None if cursor is None else str(cursor)


def _micros(when: datetime) -> int:
    return (when - EPOCH) // _MICROSECOND
