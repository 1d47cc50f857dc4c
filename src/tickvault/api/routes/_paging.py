"""Cursors as the API shows them: opaque strings that say where the next page starts."""

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel

from tickvault.api.schemas import Page
from tickvault.errors import ValidationError
from tickvault.repositories.base import Page as RepositoryPage

M = TypeVar("M", bound=BaseModel)

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="`next_cursor` of the previous page."),
]


def id_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or not 1 <= int(cursor) < 2**63:
        raise ValidationError(f"cursor {cursor!r} is not one this API returned")
    return int(cursor)


def time_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """``2024-05-06T13:30:00.250000Z|1234`` → (timestamp, id)."""
    if cursor is None:
        return None
    stamp, _, row_id = cursor.partition("|")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or id_cursor(row_id or "x") is None:
        raise ValidationError(f"cursor {cursor!r} is not one this API returned")
    return when.astimezone(UTC), int(row_id)


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
    return f"{when.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{row_id}"


def show_id_cursor(cursor: int | None) -> str | None:
    return None if cursor is None else str(cursor)
