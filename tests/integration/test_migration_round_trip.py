"""A populated database goes up the chain one revision at a time, down to the baseline and
up again, on SQLite and PostgreSQL: no row lost, every value equal to 4 decimals, and the
schema after each step exactly as DESIGN.md describes it.

On SQLite this is the test that catches batch mode recreating a parent table with foreign
keys on: the DROP TABLE would cascade and silently empty the child tables.
"""

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tests.integration.migration_data import (
    count_rows,
    index_shapes,
    insert_rows,
    make_rows,
    normalized,
    normalized_predicate,
    read_rows,
    run_on,
)
from tickvault.database.base import Base
from tickvault.services import schema

BASELINE, INDEXES, FLOATS, SOFT_DELETE, READ_PATH, HEAD = (
    "4524473b46fb",
    "df856072bded",
    "4a24cf1de90a",
    "f79e2702f75c",
    "a7c3e9d15b42",
    "c2f8d4b6e913",
)
CHAIN = [BASELINE, INDEXES, FLOATS, SOFT_DELETE, READ_PATH, HEAD]
DELETED = "deleted_at IS NOT NULL"

# name -> (columns, partial predicate); SQLite does not reflect DESC, so columns only.
Indexes = dict[str, tuple[tuple[str, ...], str | None]]
BASELINE_INDEXES: dict[str, Indexes] = {
    "market_data": {
        "ix_market_data_timestamp": (("timestamp",), None),
        "ix_market_data_instrument": (("instrument_id",), None),
        "ix_market_data_price": (("price",), None),
        "ix_market_data_latest": (("instrument_id", "timestamp"), None),
        "ix_market_data_timestamp_instrument": (("timestamp", "instrument_id"), None),
    },
    "alert_logs": {
        "ix_alert_logs_timestamp": (("timestamp",), None),
        "ix_alert_logs_instrument_timestamp": (("instrument_id", "timestamp"), None),
        "ix_alert_logs_rule_timestamp": (("rule_id", "timestamp"), None),
        "ix_alert_logs_rule": (("rule_id",), None),
        "ix_alert_logs_timestamp_instrument": (("timestamp", "instrument_id"), None),
        "ix_alert_logs_timestamp_rule": (("timestamp", "rule_id"), None),
        "ix_alert_logs_fired_status": (("fired_status",), None),
        "ix_alert_logs_delivery_status": (("delivery_status",), None),
        "ix_alert_logs_evaluation_time": (("evaluation_time_ms",), None),
        "ix_alert_logs_recent": (("rule_id", "timestamp"), None),
    },
    "alert_rules": {},
}
REDUCED_INDEXES: dict[str, Indexes] = {
    "market_data": {
        "ix_market_data_timestamp_instrument": (("timestamp", "instrument_id"), None),
        "ix_market_data_instrument_price": (("instrument_id", "price"), None),
    },
    "alert_logs": {
        "ix_alert_logs_timestamp": (("timestamp",), None),
        "ix_alert_logs_instrument_timestamp": (("instrument_id", "timestamp"), None),
        "ix_alert_logs_rule_timestamp": (("rule_id", "timestamp"), None),
        "ix_alert_logs_status": (("fired_status", "delivery_status"), None),
    },
    "alert_rules": {},
}
SOFT_DELETE_INDEXES: dict[str, Indexes] = {
    "market_data": {
        **REDUCED_INDEXES["market_data"],
        "ix_market_data_deleted_at": (("deleted_at",), None),
    },
    "alert_logs": {
        **REDUCED_INDEXES["alert_logs"],
        "ix_alert_logs_deleted_at": (("deleted_at",), None),
    },
    "alert_rules": {},
}
HEAD_INDEXES: dict[str, Indexes] = {
    "market_data": {
        "ix_market_data_timestamp_instrument": (("timestamp", "instrument_id"), None),
        "ix_market_data_instrument_timestamp": (("instrument_id", "timestamp", "id"), None),
        "ix_market_data_deleted_at": (("deleted_at",), DELETED),
    },
    "alert_logs": {
        **REDUCED_INDEXES["alert_logs"],
        "ix_alert_logs_deleted_at": (("deleted_at",), DELETED),
    },
    "alert_rules": {"ix_alert_rules_instrument": (("instrument_id",), None)},
}
VALUE_COLUMNS = {
    "market_data": ["price", "bid", "ask", "open_price", "high_price", "low_price"],
    "alert_logs": ["trigger_value", "threshold_value"],
}
FOREIGN_KEYS = {
    ("alert_rules", "instrument_id"),
    ("market_data", "instrument_id"),
    ("alert_logs", "rule_id"),
    ("alert_logs", "instrument_id"),
}
EXPECTED = {
    BASELINE: {
        "indexes": BASELINE_INDEXES,
        "values": "DECIMAL",
        "ondelete": "CASCADE",
        "deleted_at": False,
    },
    INDEXES: {
        "indexes": REDUCED_INDEXES,
        "values": "DECIMAL",
        "ondelete": "CASCADE",
        "deleted_at": False,
    },
    FLOATS: {
        "indexes": REDUCED_INDEXES,
        "values": "FLOAT",
        "ondelete": "CASCADE",
        "deleted_at": False,
    },
    SOFT_DELETE: {
        "indexes": SOFT_DELETE_INDEXES,
        "values": "FLOAT",
        "ondelete": "RESTRICT",
        "deleted_at": True,
    },
    READ_PATH: {
        "indexes": HEAD_INDEXES,
        "values": "FLOAT",
        "ondelete": "RESTRICT",
        "deleted_at": True,
    },
    HEAD: {"indexes": HEAD_INDEXES, "values": "FLOAT", "ondelete": "RESTRICT", "deleted_at": True},
}


def _kind(column_type: sa.types.TypeEngine[Any]) -> str:
    if isinstance(column_type, sa.Float):
        return "FLOAT"
    if isinstance(column_type, sa.Numeric):
        return f"DECIMAL({column_type.precision},{column_type.scale})".replace(
            "DECIMAL(12,4)", "DECIMAL"
        )
    return type(column_type).__name__


def describe_schema(url: str) -> dict[str, Any]:
    """What the database holds, in the terms of the EXPECTED table above."""

    def work(connection: Connection) -> dict[str, Any]:
        inspector = sa.inspect(connection)
        columns = {t: {c["name"]: c for c in inspector.get_columns(t)} for t in VALUE_COLUMNS}
        ondelete = {
            (table, fk["constrained_columns"][0]): (fk["options"].get("ondelete") or "").upper()
            for table in ("alert_rules", "market_data", "alert_logs")
            for fk in inspector.get_foreign_keys(table)
        }
        return {
            "indexes": {t: index_shapes(connection, t) for t in HEAD_INDEXES},
            "values": {
                f"{t}.{c}": _kind(columns[t][c]["type"])
                for t, cs in VALUE_COLUMNS.items()
                for c in cs
            },
            "evaluation_time": _kind(columns["alert_logs"]["evaluation_time_ms"]["type"]),
            "threshold": _kind(
                {c["name"]: c for c in inspector.get_columns("alert_rules")}["threshold"]["type"]
            ),
            "ondelete": ondelete,
            "deleted_at": {t: "deleted_at" in columns[t] for t in VALUE_COLUMNS},
            "receipts": _receipts_shape(connection),
        }

    return run_on(url, work)


RECEIPTS_SHAPE = {
    "columns": [
        "id", "kind", "key", "fingerprint", "source", "rows_consumed", "rows_stored", "done",
        "response", "created_at", "updated_at",
    ],
    "unique": [("kind", "key")],
    "indexes": {"ix_write_receipts_created_at": (("created_at",), None)},
}  # fmt: skip


def _receipts_shape(connection: Connection) -> dict[str, Any] | None:
    inspector = sa.inspect(connection)
    if not inspector.has_table("write_receipts"):
        return None
    unique = inspector.get_unique_constraints("write_receipts")
    return {
        "columns": [c["name"] for c in inspector.get_columns("write_receipts")],
        "unique": [tuple(u["column_names"]) for u in unique],
        # PostgreSQL lists a unique constraint's index among the indexes too.
        "indexes": {
            name: shape
            for name, shape in index_shapes(connection, "write_receipts").items()
            if name not in {u["name"] for u in unique}
        },
    }


def assert_schema_at(url: str, revision: str) -> None:
    expected = EXPECTED[revision]
    actual = describe_schema(url)
    assert actual["indexes"] == expected["indexes"], revision
    assert set(actual["values"].values()) == {expected["values"]}, (revision, actual["values"])
    assert actual["evaluation_time"] == "FLOAT"
    assert actual["threshold"] == "DECIMAL"
    assert actual["ondelete"] == {fk: expected["ondelete"] for fk in FOREIGN_KEYS}, revision
    assert actual["deleted_at"] == {t: expected["deleted_at"] for t in VALUE_COLUMNS}
    assert actual["receipts"] == (RECEIPTS_SHAPE if revision == HEAD else None), revision


@pytest.fixture
def populated_baseline(database_url: str) -> dict[str, Any]:
    schema.upgrade(database_url, BASELINE)
    rows = make_rows(n_ticks=10_000, n_alerts=1_000)
    insert_rows(database_url, rows)
    return {
        "counts": {table: len(rows[table]) for table in rows},
        "market_data": [normalized("market_data", r) for r in rows["market_data"]],
        "alert_logs": [normalized("alert_logs", r) for r in rows["alert_logs"]],
    }


def test_populated_round_trip_keeps_every_row_and_value(
    database_url: str, populated_baseline: dict[str, Any]
) -> None:
    steps = [*CHAIN[1:], *reversed(CHAIN[:-1]), HEAD]
    assert_schema_at(database_url, BASELINE)
    for step in steps:
        if CHAIN.index(step) > CHAIN.index(schema.current_revision(database_url) or BASELINE):
            schema.upgrade(database_url, step)
        else:
            schema.downgrade(database_url, step)
        assert schema.current_revision(database_url) == step
        assert count_rows(database_url) == populated_baseline["counts"], step
        assert read_rows(database_url, "market_data") == populated_baseline["market_data"], step
        assert read_rows(database_url, "alert_logs") == populated_baseline["alert_logs"], step
        assert_schema_at(database_url, step)


def test_receipts_revision_keeps_the_other_tables_and_a_receipt_round_trips(
    database_url: str, populated_baseline: dict[str, Any]
) -> None:
    schema.upgrade(database_url, HEAD)

    def write_receipt(connection: Connection) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO write_receipts (kind, key, fingerprint, rows_consumed, rows_stored)"
                " VALUES ('file', 'k', 'f', 300000, 299990)"
            )
        )

    def read_receipts(connection: Connection) -> list[tuple[Any, ...]]:
        return [
            tuple(row)
            for row in connection.execute(
                sa.text("SELECT kind, key, rows_consumed, rows_stored, done FROM write_receipts")
            )
        ]

    run_on(database_url, write_receipt)
    assert run_on(database_url, read_receipts) == [("file", "k", 300000, 299990, False)]
    schema.downgrade(database_url, READ_PATH, allow_data_loss=True)
    assert_schema_at(database_url, READ_PATH)
    assert count_rows(database_url) == populated_baseline["counts"]
    schema.upgrade(database_url, HEAD)
    assert run_on(database_url, read_receipts) == []


def test_head_indexes_match_the_models(head_url: str) -> None:
    """Alembic's autogenerate compares names and columns but not partial predicates: this
    compares them too, models against the migrated database."""
    models = {
        table: {
            ix.name: (
                tuple(c.name for c in ix.columns),
                normalized_predicate(ix.dialect_options["postgresql"]["where"]),
            )
            for ix in Base.metadata.tables[table].indexes
        }
        for table in HEAD_INDEXES
    }
    assert models == HEAD_INDEXES
    assert describe_schema(head_url)["indexes"] == models


def test_the_edge_values_come_back_from_the_database_as_float_and_as_decimal(
    database_url: str, populated_baseline: dict[str, Any]
) -> None:
    edges = {Decimal("0.0001"), Decimal("99999999.9999"), Decimal("-99999999.9999"), None}
    assert populated_baseline["counts"]["market_data"] >= 10_000
    assert populated_baseline["counts"]["alert_logs"] >= 1_000
    for step, migrate in ((FLOATS, schema.upgrade), (BASELINE, schema.downgrade)):
        migrate(database_url, step)
        prices = {value for row in read_rows(database_url, "market_data") for value in row[4:]}
        assert edges <= prices, step
