"""The SQLite reader process: ``adbc-driver-sqlite`` reading keyset pages of ticks into
Arrow in C, in a process of its own, for ``repositories.sqlite_pages``.

Why a process: the driver links a copy of SQLite of its own, and two copies of SQLite in
one process break each other's POSIX locks (``repositories.native``). Locks belong to a
process, so here, where the driver's copy is the only one, it is safe.

The pages it is asked for come on standard input, a JSON object a line; each one's rows go
out on standard output as one record batch of ``columns.tick_schema()`` in an Arrow IPC
stream, prices as stored, after an empty batch that says the process is ready. At the end
of its input it exits 0; on an error it writes one JSON line to standard error and exits
1::

    $ python -m tickvault.repositories.sqlite_reader 'file:/data/ticks.db?mode=ro' 5000
    {"sql": "SELECT id, ... LIMIT 65536", "rows": 65536}
"""

import json
import sys
from typing import Any

# The read-only URI and the busy timeout in milliseconds.
USAGE = "usage: python -m tickvault.repositories.sqlite_reader URI BUSY_TIMEOUT_MS"
# The file read through memory-mapped I/O, up to this much: no copy of each page into
# SQLite's cache. An I/O error under a map is a signal that ends this process; the reading
# process then reads the rest itself.
MMAP_BYTES = 1 << 30


def page(statement: Any, sql: str, rows: int) -> Any:
    """The rows of ``sql`` (at most ``rows``) as one batch of ``tick_schema()``, prices as
    stored (the reading process rounds them while this one reads the next page)."""
    import pyarrow as pa

    from tickvault.repositories import columns

    # One batch a page: the driver types a column from the values of its first batch, so a
    # statement whose later batch held doubles in a column of NULLs alone would fail.
    statement.set_options(**{"adbc.sqlite.query.batch_rows": str(rows)})
    statement.set_sql_query(sql)
    stream, _ = statement.execute_query()
    batches = list(pa.RecordBatchReader.from_stream(stream))
    if not batches:
        return empty(pa, columns.tick_schema())
    whole = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
    return columns.as_tick_batch(whole, rounded=False)


def empty(pa: Any, schema: Any) -> Any:
    """A batch of no rows (made without Python values: pyarrow imports pandas for those,
    where it is installed, which would slow this process's start)."""
    return pa.RecordBatch.from_arrays([pa.nulls(0, field.type) for field in schema], schema=schema)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    uri, busy_timeout_ms = argv[1], int(argv[2])
    try:
        # The driver's own API, not its DB-API module: that one imports pandas and Polars
        # where they are installed, which would slow this process's start.
        import adbc_driver_manager as adbc
        import adbc_driver_sqlite
        import pyarrow as pa

        from tickvault.repositories import columns

        with (
            adbc_driver_sqlite.connect(uri) as database,
            adbc.AdbcConnection(database) as connection,
            adbc.AdbcStatement(connection) as statement,
            pa.ipc.new_stream(sys.stdout.buffer, columns.tick_schema()) as out,
        ):
            for pragma in (f"busy_timeout = {busy_timeout_ms}", f"mmap_size = {MMAP_BYTES}"):
                statement.set_sql_query(f"PRAGMA {pragma}")
                statement.execute_update()
            # An empty batch first (the stream's schema goes out with it): ready.
            out.write_batch(empty(pa, columns.tick_schema()))
            sys.stdout.buffer.flush()
            for line in sys.stdin.buffer:
                request = json.loads(line)
                out.write_batch(page(statement, request["sql"], int(request["rows"])))
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
