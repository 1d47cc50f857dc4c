"""Which databases ADBC reads (and how their URLs are handed to its drivers), and the range
query both read paths run: no database needed."""

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.dialects import sqlite

from tickvault.database.engine import create_engine
from tickvault.errors import DatabaseUnavailable
from tickvault.repositories import columns, sqlite_reader
from tickvault.repositories.market_data import range_select
from tickvault.repositories.native import NativeReads

START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


async def test_a_postgresql_url_is_handed_to_libpq_with_its_settings() -> None:
    engine = create_engine("postgresql://ana:s3cret@db.example:5433/ticks?ssl=require")
    try:
        native = NativeReads.of(engine)
        assert native is not None
        assert native.uri == (
            "postgresql://ana:s3cret@db.example:5433/ticks?connect_timeout=60&sslmode=require"
        )
        assert "s3cret" not in native.where
        assert "s3cret" not in repr(native)
    finally:
        await engine.dispose()


async def test_what_a_second_connection_cannot_read_falls_back_to_the_session() -> None:
    """An in-memory SQLite database is one connection's own; an asyncpg-only URL setting
    means nothing to libpq."""
    for url in ("sqlite+aiosqlite://", "sqlite:///:memory:",
                "postgresql://u@h/db?prepared_statement_cache_size=0",
                "postgresql://u@h/db?ssl=true"):  # fmt: skip
        engine = create_engine(url)
        try:
            assert NativeReads.of(engine) is None, url
        finally:
            await engine.dispose()


async def test_a_sqlite_file_is_opened_read_only(tmp_path: object) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/a b.db")
    try:
        native = NativeReads.of(engine)
        assert native is not None
        assert native.uri == f"file:{tmp_path}/a%20b.db?mode=ro"
    finally:
        await engine.dispose()


async def test_an_unreachable_server_is_unavailable_not_a_fault() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        native = NativeReads.of(engine)
        assert native is not None
        with pytest.raises(DatabaseUnavailable, match="database unavailable at postgresql"):
            async for _batch in native.range_batches(1, START, END):
                pass
    finally:
        await engine.dispose()


def test_the_range_starts_at_the_cursor_not_at_the_range_start() -> None:
    """After a cursor, the range's one lower bound is the cursor's time: SQLite starts an
    index range at one lower bound only, and with two every keyset page walked the index
    from the range's start (reading a range cost pages squared)."""
    cursor = (datetime(2024, 5, 6, 14, tzinfo=UTC), 7)
    query = range_select("sqlite", 1, START, END, after=cursor)
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert sql.count("market_data.timestamp >=") == 1
    assert "market_data.timestamp >= '2024-05-06 14:00:00.000000'" in sql


def _reader(*args: str, pages: str = "") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tickvault.repositories.sqlite_reader", *args],
        input=pages.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_the_sqlite_reader_process_says_what_went_wrong(tmp_path: Path) -> None:
    """Its errors are one JSON line and exit status 1 (the reading process logs it and reads
    the page itself); a wrong command line is its usage."""
    usage = _reader("file:x.db")
    assert (usage.returncode, usage.stderr.decode().strip()) == (2, sqlite_reader.USAGE)
    missing = tmp_path / "missing.db"
    page = json.dumps({"sql": "SELECT 1", "rows": 10}) + "\n"
    failed = _reader(f"file:{missing}?mode=ro", "5000", pages=page)
    assert failed.returncode == 1
    said = json.loads(failed.stderr)
    assert "failed to open" in said["message"], said
    assert "missing.db" in said["message"], said
    assert failed.stdout == b""
    assert not missing.exists()  # read-only: never created


def test_the_sqlite_reader_process_ends_with_its_input(tmp_path: Path) -> None:
    """No page asked for: an empty stream of ticks, exit 0."""
    database = tmp_path / "ticks.db"
    sqlite3.connect(database).close()
    done = _reader(f"file:{database}?mode=ro", "5000")
    assert (done.returncode, done.stderr) == (0, b"")
    stream = pa.ipc.open_stream(done.stdout)
    assert stream.schema.equals(columns.tick_schema())
    assert stream.read_all().num_rows == 0
