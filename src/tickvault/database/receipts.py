"""Write receipts of file loads: where a load stands, moved forward with each batch.

A load's receipt (``write_receipts``, ``kind='file'``) holds the rows of its input consumed
so far and the rows stored. Each batch moves it in the same transaction as the batch's rows,
and only from where this load last left it::

    UPDATE write_receipts SET rows_consumed = <batch end>, rows_stored = rows_stored + <n>
    WHERE kind = 'file' AND key = <key> AND rows_consumed = <where this load left it>

so a crash leaves the receipt exactly at the last committed batch, and a second load of the
same input running at once finds the receipt moved and stops (``LoadInProgress``) instead of
storing rows twice.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tickvault.database.engine import write_transaction
from tickvault.errors import LoadInProgress
from tickvault.monitoring.capture import measured

FILE = "file"
_ADVANCE_ASYNCPG = (
    "UPDATE write_receipts SET rows_consumed = $1, rows_stored = rows_stored + $2, "
    "done = $3, updated_at = now() "
    "WHERE kind = 'file' AND key = $4 AND rows_consumed = $5"
)


@dataclass(frozen=True)
class LoadReceipt:
    key: str
    fingerprint: str
    source: str | None
    rows_consumed: int
    rows_stored: int
    done: bool
    updated_at: datetime | None


def file_fingerprint(path: Path) -> str:
    """sha256 (hex) of the file's content: the same bytes under any name are one load."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_SELECT = text(
    "SELECT key, fingerprint, source, rows_consumed, rows_stored, done, updated_at "
    "FROM write_receipts WHERE kind = 'file' AND key = :key"
)


async def _read(connection: AsyncConnection, key: str) -> LoadReceipt | None:
    row = (await connection.execute(_SELECT, {"key": key})).first()
    if row is None:
        return None
    updated = row[6]
    if isinstance(updated, str):  # SQLite returns the text it stores
        updated = datetime.fromisoformat(updated)
    return LoadReceipt(row[0], row[1], row[2], int(row[3]), int(row[4]), bool(row[5]), updated)


async def open_load(
    engine: AsyncEngine, key: str, *, fingerprint: str, source: str | None, force: bool
) -> LoadReceipt:
    """The receipt of the load ``key``, created if new; with ``force``, set back to the
    start (a load of the same input again)."""
    async with write_transaction(engine) as connection:
        receipt = await _read(connection, key)
        if receipt is None:
            try:
                async with connection.begin_nested():
                    await connection.execute(
                        text(
                            "INSERT INTO write_receipts (kind, key, fingerprint, source) "
                            "VALUES ('file', :key, :fingerprint, :source)"
                        ),
                        {"key": key, "fingerprint": fingerprint, "source": source},
                    )
            except IntegrityError:
                pass  # another load created it a moment ago
        elif force:
            await connection.execute(
                text(
                    "UPDATE write_receipts SET rows_consumed = 0, rows_stored = 0, "
                    "done = false, source = :source, updated_at = CURRENT_TIMESTAMP "
                    "WHERE kind = 'file' AND key = :key"
                ),
                {"key": key, "source": source},
            )
        receipt = await _read(connection, key)
    assert receipt is not None
    return receipt


@dataclass
class LoadProgress:
    """Moves one load's receipt; ``consumed`` is where this load last left it."""

    key: str
    consumed: int

    def _conflict(self) -> LoadInProgress:
        return LoadInProgress(
            "another load of the same input moved its receipt past row "
            f"{self.consumed:,}: this load stopped (nothing was stored twice)"
        )

    async def advance_sqlite(
        self, connection: AsyncConnection, end: int, stored: int, *, done: bool = False
    ) -> None:
        """In the batch's transaction, on SQLite (or any SQLAlchemy connection)."""
        result = await connection.execute(
            text(
                "UPDATE write_receipts SET rows_consumed = :end, "
                "rows_stored = rows_stored + :stored, done = :done, "
                "updated_at = CURRENT_TIMESTAMP "
                "WHERE kind = 'file' AND key = :key AND rows_consumed = :start"
            ),
            {"end": end, "stored": stored, "done": done, "key": self.key, "start": self.consumed},
        )
        if result.rowcount != 1:
            raise self._conflict()
        self.consumed = end

    async def advance_asyncpg(
        self, engine: AsyncEngine, driver: Any, end: int, stored: int, *, done: bool = False
    ) -> None:
        """In the batch's transaction, on an asyncpg connection (the COPY's) of ``engine``,
        whose monitors see the statement as they see SQLAlchemy's."""
        async with measured(engine, _ADVANCE_ASYNCPG, 1):
            status = await driver.execute(
                _ADVANCE_ASYNCPG, end, stored, done, self.key, self.consumed
            )
        if status != "UPDATE 1":
            raise self._conflict()
        self.consumed = end

    async def finish(self, engine: AsyncEngine, end: int) -> None:
        """Mark the load done once every row of the input is consumed."""
        async with write_transaction(engine) as connection:
            await self.advance_sqlite(connection, end, 0, done=True)
