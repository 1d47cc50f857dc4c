"""The SQLite reader process: ``adbc-driver-sqlite`` reading keyset pages of ticks into
Arrow in C, in a process of its own, for ``repositories.sqlite_pages``.

Why a process: the driver links a copy of SQLite of its own, and two copies of SQLite in
one process break each other's POSIX locks (``repositories.native``). Locks belong to a
process, so here, where the driver's copy is the only one, it is safe.

The pages it is asked for come on standard input, a JSON object a line; each one's rows go
out on standard output as one record batch of ``columns.tick_schema()`` in an Arrow IPC
stream, prices as stored. At the end of its input it exits 0; on an error it writes one JSON
line to standard error and exits 1::

    $ python -m tickvault.repositories.sqlite_reader 'file:/data/ticks.db?mode=ro' 5000
    {"sql": "SELECT id, ... LIMIT 65536", "rows": 65536}
"""

import json
import sys
from typing import Any

# The read-only URI and the busy timeout in milliseconds.
USAGE = "usage: python -m tickvault.repositories.sqlite_reader URI BUSY_TIMEOUT_MS"


def page(cursor: Any, sql: str, rows: int) -> Any:
    """The rows of ``sql`` (at most ``rows``) as one batch of ``tick_schema()``, prices as
    stored (the reading process rounds them while this one reads the next page)."""
    import pyarrow as pa

    from tickvault.repositories import columns

    # One batch a page: the driver types a column from the values of its first batch, so a
    # statement whose later batch held doubles in a column of NULLs alone would fail.
    cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(rows)})
    cursor.execute(sql)
    batches = list(cursor.fetch_record_batch())
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=columns.tick_schema())
    whole = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
    return columns.as_tick_batch(whole, rounded=False)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    uri, busy_timeout_ms = argv[1], int(argv[2])
    try:
        import adbc_driver_sqlite.dbapi as driver
        import pyarrow as pa

        from tickvault.repositories import columns

        with (
            driver.connect(uri) as connection,
            connection.cursor() as cursor,
            pa.ipc.new_stream(sys.stdout.buffer, columns.tick_schema()) as out,
        ):
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            for line in sys.stdin.buffer:
                request = json.loads(line)
                out.write_batch(page(cursor, request["sql"], int(request["rows"])))
                sys.stdout.buffer.flush()
    except BrokenPipeError:
        return 0  # the reader stopped listening: nothing more is wanted
    except Exception as exc:  # reported whole to the parent, which reads the page itself
        message = str(exc).strip().splitlines() or [type(exc).__name__]
        print(json.dumps({"error": type(exc).__name__, "message": message[0]}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
