"""What every repository shares: pages for keyset pagination, and error translation."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tickvault.database.session import INCLUDE_DELETED
from tickvault.errors import (
    ConflictError,
    NotFoundError,
    StillReferenced,
    TickvaultError,
    ValidationError,
)

T = TypeVar("T")
C = TypeVar("C")

MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class Page(Generic[T, C]):
    """One page of rows, and the cursor that fetches the next (``None`` on the last page)."""

    items: Sequence[T]
    next_cursor: C | None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    return limit


async def fetch_page(
    session: AsyncSession, query: Select[T], limit: int, cursor_of: Callable[[T], C]
) -> Page[T, C]:
    """Run ``query`` (ordered, and limited to ``limit + 1`` by the caller) as one page: the
    extra row, if it comes back, says there is a next page and is not returned."""
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, cursor_of(rows[-1]) if more else None)


async def add_row(
    session: AsyncSession,
    row: T,
    what: str,
    *,
    foreign_key: type[TickvaultError],
    foreign_key_message: str,
) -> T:
    """Add and flush ``row``; constraint errors come back as tickvault errors naming it."""
    with translated_integrity_errors(
        what, foreign_key=foreign_key, foreign_key_message=foreign_key_message
    ):
        session.add(row)
        await session.flush()
    return row


async def get_row(
    session: AsyncSession, model: type[T], row_id: int, what: str, *, include_deleted: bool = False
) -> T:
    """The row with ``row_id``, or ``NotFoundError`` (soft-deleted rows count as missing
    unless ``include_deleted``)."""
    row = await session.get(model, row_id, execution_options={INCLUDE_DELETED: include_deleted})
    if row is None:
        raise NotFoundError(f"{what} {row_id} not found")
    return row


def soft_deleted(model: Any) -> ColumnElement[bool]:
    """``model.id IN (soft-deleted ids)``: the filter of "list deleted" reads.

    Written as a subquery so that both engines read the ids from the partial
    ``ix_<table>_deleted_at`` and then fetch those rows by primary key, in id order: with a
    plain ``deleted_at IS NOT NULL`` and ``ORDER BY id`` SQLite (no statistics) walks the
    whole table by id instead, to skip a sort.
    """
    condition: ColumnElement[bool] = model.id.in_(
        select(model.id).where(model.deleted_at.is_not(None))
    )
    return condition


def by_id(row: Any) -> int:
    """The cursor of pages ordered by id."""
    return int(row.id)


@contextmanager
def translated_integrity_errors(
    what: str, *, foreign_key: type[TickvaultError], foreign_key_message: str
) -> Iterator[None]:
    """Turn constraint errors into tickvault errors naming ``what``.

    SQLite says only "FOREIGN KEY constraint failed" for both a missing parent and a parent
    that still has children, so the caller says which one a foreign key error means here.
    """
    try:
        yield
    except IntegrityError as exc:
        message = str(exc.orig).lower()
        if "foreign key" in message:
            raise foreign_key(f"{what}: {foreign_key_message}") from exc
        if "unique" in message or "duplicate key" in message:
            raise ConflictError(f"{what}: already exists") from exc
        raise


async def delete_unreferenced(session: AsyncSession, row: Any, what: str, children: str) -> None:
    """Delete ``row`` if nothing refers to it; RESTRICT refuses otherwise: StillReferenced."""
    with translated_integrity_errors(
        what,
        foreign_key=StillReferenced,
        foreign_key_message=f"still has {children} (soft-deleted ones count); "
        "deactivate it instead",
    ):
        await session.delete(row)
        await session.flush()
