"""Fill a database at any revision with known rows, and read them back for comparison.

Values are written as ``Decimal`` with 4 decimals (the baseline's DECIMAL(12,4)) and compared
rounded to 4 decimals, whatever type the column has at the revision being checked.
"""

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tickvault.database.engine import create_engine

Q = Decimal("0.0001")
EDGE_VALUES = [
    Decimal("0.0001"),
    Decimal("99999999.9999"),
    Decimal("-99999999.9999"),
    None,
    Decimal("0.0000"),
    Decimal("-0.0001"),
    Decimal("12345678.9012"),
]
MARKET_PRICES = ["price", "bid", "ask", "open_price", "high_price", "low_price"]
ALERT_VALUES = ["trigger_value", "threshold_value"]
START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)

T = TypeVar("T")


def run_on(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work(connection)`` in one committed transaction on a fresh engine."""

    async def go() -> T:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def reflect(connection: Connection, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=connection)


def normalized_predicate(predicate: Any) -> str | None:
    """A partial index's predicate as text, without the parentheses PostgreSQL adds."""
    if predicate is None:
        return None
    return " ".join(str(predicate).replace("(", " ").replace(")", " ").split())


def index_shapes(connection: Connection, table: str) -> dict[str, tuple[tuple[str, ...], Any]]:
    """name -> (columns, partial predicate or None), as the database reports them."""
    shapes = {}
    for index in sa.inspect(connection).get_indexes(table):
        options = index.get("dialect_options", {})
        where = options.get("postgresql_where", options.get("sqlite_where"))
        shapes[str(index["name"])] = (
            tuple(str(c) for c in index["column_names"]),
            normalized_predicate(where),
        )
    return shapes


def _price(rng: random.Random, i: int) -> Decimal | None:
    if i < len(EDGE_VALUES):
        return EDGE_VALUES[i]
    if rng.random() < 0.05:
        return None
    return (Decimal(rng.randint(-999_999_999_999, 999_999_999_999)) * Q).quantize(Q)


def make_rows(n_ticks: int, n_alerts: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    instruments = [
        {"id": i, "symbol": f"SYM{i}", "name": f"Instrument {i}", "exchange": "XTST"}
        for i in range(1, 21)
    ]
    rules = [
        {
            "id": i,
            "name": f"rule {i}",
            "instrument_id": i,
            "condition": "price_above",
            "threshold": Decimal(rng.randint(1, 10**8)) * Q,
        }
        for i in range(1, 21)
    ]
    ticks = []
    for i in range(n_ticks):
        tick: dict[str, Any] = {
            "id": i + 1,
            "instrument_id": 1 + i % 20,
            "timestamp": START + timedelta(milliseconds=137 * i),
            "volume": None if i % 50 == 3 else rng.randint(0, 2**62),
        }
        for offset, column in enumerate(MARKET_PRICES):
            tick[column] = _price(rng, (i + offset) if i < 10 else i)
        ticks.append(tick)
    alerts = []
    for i in range(n_alerts):
        alert: dict[str, Any] = {
            "id": i + 1,
            "rule_id": 1 + i % 20,
            "instrument_id": 1 + i % 20,
            "timestamp": START + timedelta(seconds=i),
            "fired_status": ("fired", "suppressed", "cleared")[i % 3],
            "delivery_status": ("pending", "sent", "failed")[i % 3],
            "evaluation_time_ms": rng.random() * 5,
            "message": f"alert {i}",
        }
        for offset, column in enumerate(ALERT_VALUES):
            alert[column] = _price(rng, (i + offset) if i < 10 else i)
        alerts.append(alert)
    return {
        "instruments": instruments,
        "alert_rules": rules,
        "market_data": ticks,
        "alert_logs": alerts,
    }


def insert_rows(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    def work(connection: Connection) -> None:
        for table in ("instruments", "alert_rules", "market_data", "alert_logs"):
            connection.execute(reflect(connection, table).insert(), rows[table])
        if connection.dialect.name == "postgresql":
            # Explicit ids leave the sequences behind: move them past the rows.
            for table in ("instruments", "alert_rules", "market_data", "alert_logs"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )

    run_on(url, work)


def as_4dp(value: Any) -> Decimal | None:
    """A stored number as a Decimal with 4 decimals, whatever type it came back as."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value.quantize(Q)
    return Decimal(f"{float(value):.4f}")


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalized(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    values = MARKET_PRICES if table == "market_data" else ALERT_VALUES
    keys = (
        ["id", "instrument_id", "volume"]
        if table == "market_data"
        else ["id", "rule_id", "instrument_id", "fired_status", "delivery_status", "message"]
    )
    return (
        *(row[k] for k in keys),
        as_utc(row["timestamp"]),
        *(as_4dp(row[c]) for c in values),
    )


def read_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    def work(connection: Connection) -> list[tuple[Any, ...]]:
        t = reflect(connection, table)
        result = connection.execute(sa.select(t).order_by(t.c.id)).mappings()
        return [normalized(table, dict(row)) for row in result]

    return run_on(url, work)


def count_rows(url: str) -> dict[str, int]:
    def work(connection: Connection) -> dict[str, int]:
        return {
            table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("instruments", "alert_rules", "market_data", "alert_logs")
        }

    return run_on(url, work)
