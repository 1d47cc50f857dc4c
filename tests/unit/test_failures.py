"""Which driver errors mean "try again later": only those; a permanent one never does."""

import sqlite3

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from tickvault.database.failures import Failure, kind_of


def sqlite_error(sql: str) -> sqlite3.Error:
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        # SUM of integers past 64 bits (OHLCV volumes before they were summed in halves).
        (sqlite_error(f"SELECT sum(v) FROM (SELECT {2**63 - 1} AS v UNION ALL SELECT 1)"),
         Failure.FAULT),
        (sqlite_error("SELECT * FROM no_such_table"), Failure.FAULT),
        # asyncpg refusing a query argument before sending it: the value's fault.
        (asyncpg_base.DataError("invalid input for query argument $1: 2**70 (out of int64 range)"),
         Failure.ROW),
        (asyncpg_base.ClientConfigurationError("bad client setting"), Failure.FAULT),
        (asyncpg_base.UnsupportedServerFeatureError("no such feature"), Failure.FAULT),
        (asyncpg.InterfaceError("connection is closed"), Failure.UNAVAILABLE),
        (ConnectionRefusedError(111, "Connect call failed"), Failure.UNAVAILABLE),
    ],
)  # fmt: skip
def test_kind_of(error: BaseException, kind: Failure) -> None:
    assert kind_of(error) is kind
