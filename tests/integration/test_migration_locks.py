"""What each revision locks on PostgreSQL, read from ``pg_locks`` just before its COMMIT.

A migration holds every lock it takes until its transaction commits, so the locks its
transaction holds at that moment are what it held, at its strongest, for the rest of the
run. Each revision runs up and down on its own, on a database holding rows; a listener on
the connection's ``commit`` event reads the backend's own locks before the COMMIT is sent.
``LOCKS`` is docs/migrations.md's table ("What each revision locks on PostgreSQL"): the test
reads that table too, so the docs, this table and PostgreSQL must all agree.
"""

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from tests.conftest import postgres_admin_url
from tests.integration.migration_data import insert_rows, make_rows
from tickvault.bench.data import throwaway
from tickvault.database.base import Base
from tickvault.database.engine import create_engine
from tickvault.services import schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "migrations.md"
TABLES = sorted(Base.metadata.tables)
# PostgreSQL's table lock modes, weakest first.
MODES = [
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
]
AE, SHARE = "ACCESS EXCLUSIVE", "SHARE"
BASELINE = "4524473b46fb"
FIRST_FOUR = ("instruments", "alert_rules", "market_data", "alert_logs")  # the baseline's tables

# (revision, direction) -> the strongest lock held at COMMIT on each table that existed
# before the step (a table the step creates is invisible to others until then). A table not
# named is not locked at all. "upgrade after build-indexes": a7c3e9d15b42 once `tickvault db
# build-indexes` has built its indexes, when only the old index is left to drop.
LOCKS: dict[tuple[str, str], dict[str, str]] = {
    ("4524473b46fb", "upgrade"): {},
    ("df856072bded", "upgrade"): {"market_data": AE, "alert_logs": AE},
    ("4a24cf1de90a", "upgrade"): {"market_data": AE, "alert_logs": AE},
    ("f79e2702f75c", "upgrade"): dict.fromkeys(FIRST_FOUR, AE),
    ("a7c3e9d15b42", "upgrade"): {"market_data": AE, "alert_logs": AE, "alert_rules": SHARE},
    ("a7c3e9d15b42", "upgrade after build-indexes"): {"market_data": AE},
    ("c2f8d4b6e913", "upgrade"): {},
    ("c2f8d4b6e913", "downgrade"): {"write_receipts": AE},
    ("a7c3e9d15b42", "downgrade"): {"market_data": AE, "alert_logs": AE, "alert_rules": AE},
    ("f79e2702f75c", "downgrade"): dict.fromkeys(FIRST_FOUR, AE),
    ("4a24cf1de90a", "downgrade"): {"market_data": AE, "alert_logs": AE},
    ("df856072bded", "downgrade"): {"market_data": AE, "alert_logs": AE},
    ("4524473b46fb", "downgrade"): dict.fromkeys(FIRST_FOUR, AE),
}
# What the docs say waits behind each mode.
WAITS = {AE: "reads and writes", SHARE: "writes", "SHARE ROW EXCLUSIVE": "writes"}

OWN_LOCKS = (
    "SELECT relation, mode FROM pg_locks WHERE pid = pg_backend_pid() "
    "AND locktype = 'relation' AND granted"
)


def _mode_name(mode: str) -> str:
    """'ShareRowExclusiveLock' -> 'SHARE ROW EXCLUSIVE'."""
    return " ".join(re.findall(r"[A-Z][a-z]+", mode.removesuffix("Lock"))).upper()


def _strongest(modes: set[str]) -> str:
    return max(modes, key=MODES.index)


def _table_oids(connection: Connection) -> dict[int, str]:
    rows = connection.execute(
        sa.text(
            "SELECT c.oid, c.relname FROM pg_class c WHERE c.relkind = 'r' "
            "AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(:names)"
        ),
        {"names": TABLES},
    )
    return {int(oid): str(name) for oid, name in rows}


def _migrate_reading_locks(
    connection: Connection, url: str, direction: str, target: str
) -> dict[str, str]:
    tables = _table_oids(connection)
    connection.commit()
    held: dict[str, set[str]] = {}
    commits: list[None] = []

    def read_own_locks(conn: Connection) -> None:
        # Runs before the COMMIT is sent: the transaction still holds everything it took.
        commits.append(None)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(OWN_LOCKS)
            for relation, mode in cursor.fetchall():
                if int(relation) in tables:
                    held.setdefault(tables[int(relation)], set()).add(_mode_name(mode))
        finally:
            cursor.close()

    sa.event.listen(connection, "commit", read_own_locks)
    try:
        config = schema.alembic_config(url)
        config.attributes["connection"] = connection
        getattr(command, direction)(config, target)
    finally:
        sa.event.remove(connection, "commit", read_own_locks)
    assert len(commits) == 1, "the step ran in one transaction, read just before its COMMIT"
    return {table: _strongest(modes) for table, modes in held.items()}


def locks_at_commit(url: str, direction: str, target: str) -> dict[str, str]:
    """Run one migration step and return the strongest lock it held on each table."""

    async def go() -> dict[str, str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_migrate_reading_locks, url, direction, target)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway("postgresql", postgres_admin_url()) as url:
        yield url


def _steps() -> list[tuple[str, str, str]]:
    """(revision, direction, target) for every step up the chain and back down."""
    chain = [rev.id for rev in schema.history()]
    up = [(rev, "upgrade", rev) for rev in chain]
    previous = ["base", *chain[:-1]]
    down = [(rev, "downgrade", prev) for rev, prev in zip(chain, previous, strict=True)][::-1]
    return up + down


def test_each_revision_holds_the_locks_the_docs_say(postgres_url: str) -> None:
    measured: dict[tuple[str, str], dict[str, str]] = {}
    for revision, direction, target in _steps():
        measured[(revision, direction)] = locks_at_commit(postgres_url, direction, target)
        if (revision, direction) == (BASELINE, "upgrade"):
            # Every later step runs on a database that holds rows.
            insert_rows(postgres_url, make_rows(n_ticks=200, n_alerts=20))
    assert schema.current_revision(postgres_url) is None
    assert measured == {
        step: held for step, held in LOCKS.items() if step[1] in ("upgrade", "downgrade")
    }


def test_after_build_indexes_the_read_path_revision_only_drops_the_old_index(
    postgres_url: str,
) -> None:
    schema.upgrade(postgres_url, BASELINE)
    insert_rows(postgres_url, make_rows(n_ticks=200, n_alerts=20))
    schema.upgrade(postgres_url, "f79e2702f75c")
    assert [b.built for b in schema.build_indexes_concurrently(postgres_url)] == [True] * 4

    measured = locks_at_commit(postgres_url, "upgrade", "a7c3e9d15b42")

    assert measured == LOCKS[("a7c3e9d15b42", "upgrade after build-indexes")]


STEP = re.compile(r"^`(\w{12})` (up|down)( after `build-indexes`)?$")
HELD = re.compile(r"^([\w, ]+): ([A-Z ]+) \(([a-z ]+)\)$")


def documented_locks() -> dict[tuple[str, str], dict[str, str]]:
    """docs/migrations.md's lock table, read as LOCKS is written."""
    text = DOCS.read_text()
    section = text[text.index("## What each revision locks on PostgreSQL") :]
    rows = [line for line in section.splitlines()[1:] if line.startswith("| `")]
    documented: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        step, _statements, held = (cell.strip() for cell in row.strip("|").split(" | "))
        found = STEP.match(step)
        assert found, step
        direction = {"up": "upgrade", "down": "downgrade"}[found[2]]
        key = (found[1], direction + (" after build-indexes" if found[3] else ""))
        documented[key] = {}
        if held.startswith("none"):
            continue
        for part in held.split("; "):
            tables, mode, waits = HELD.match(part).groups()  # type: ignore[union-attr]
            assert WAITS[mode] == waits, row
            documented[key].update(dict.fromkeys(tables.split(", "), mode))
    return documented


def test_the_docs_table_is_this_table() -> None:
    assert documented_locks() == LOCKS
