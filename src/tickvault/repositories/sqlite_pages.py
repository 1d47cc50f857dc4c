"""A range of ticks read from SQLite in keyset pages, a statement (a record batch) each, for
``repositories.native``.

The pages are read by the SQLite reader process (``repositories.sqlite_reader``), where
``adbc-driver-sqlite`` reads rows into Arrow in C, several times faster than ``sqlite3``
makes Python tuples. An answer starts without it: its first pages, of ``HERE_ROWS``, are
read here through the standard library's ``sqlite3`` (the library aiosqlite runs on) and
made into columns by Arrow; the process starts once more than a batch (``batch_rows``) is
on its way, and takes over when ready. So an answer of less than a batch never starts a
process, none waits for one, and a long one pays for it once. ``long=True`` (an export)
starts it at once. Where the driver is not installed or the process fails, the pages are
read here; so they are while every core has a reader process, until one is free::

    pages = SqlitePages(uri, where, sql_of, after=None, batch_rows=65_536)
    while (batch := pages.next_batch()) is not None:   # tick_schema() batches
        ...
    pages.close()
"""

import importlib.util
import json
import logging
import os
import select
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import suppress
from functools import cache
from pathlib import Path
from time import perf_counter
from typing import Any

import tickvault
from tickvault.database.failures import translate
from tickvault.errors import DatabaseError, DatabaseUnavailable
from tickvault.repositories import columns
from tickvault.repositories.market_data import RangeCursor

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
READER_MODULE = "tickvault.repositories.sqlite_reader"
# Reader processes running at once, in all: a range past them is read in this process.
READERS = threading.BoundedSemaphore(os.cpu_count() or 1)
# The pages read here: small, so that a long range starts its reader process soon, and
# goes on here until that process is ready.
HERE_ROWS = 8192
PIPE_BYTES = 1 << 20  # Linux's most for an unprivileged process, by default


class BatchRead:
    """A read whose batches worker threads take, one call at a time. ``close()`` waits for
    the batch being read (a connection or a pipe closed under a reading thread crashes the
    process); ``stop()``, from any thread, makes it end soon, and ``next_batch`` then gives
    None. ``finished`` holds the (SQL, started, rows) of each statement read, for the
    monitors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped = False
        self.finished: list[tuple[str, float, int]] = []

    def next_batch(self) -> Any:
        """The next batch of ``tick_schema()``, or None at the end (or once stopped)."""
        with self.lock:
            try:
                return None if self.stopped else self._next_batch()
            except DatabaseError:
                if self.stopped:  # what stop() interrupted
                    return None
                raise

    def stop(self) -> None:
        self.stopped = True
        self._interrupt()

    def close(self) -> None:
        """Stop, and close once no batch is being read."""
        self.stop()
        with self.lock:
            self._close()

    def _next_batch(self) -> Any:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Make the batch being read end soon, without waiting."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class SqlitePages(BatchRead):
    """Keyset pages of one range (called from worker threads, one call at a time).
    ``sql_of(after, rows)`` is the statement of the page after a cursor, at most ``rows``;
    ``long``: the caller expects many pages (an export): the reader process starts at once
    and reads them all. ``finished`` holds the (SQL, started, rows) of each statement run,
    for the monitors."""

    def __init__(
        self,
        uri: str,
        where: str,
        sql_of: Callable[[RangeCursor | None, int], str],
        *,
        after: RangeCursor | None,
        batch_rows: int,
        long: bool = False,
    ) -> None:
        self.uri, self.where, self.sql_of = uri, where, sql_of
        self.after, self.batch_rows = after, batch_rows
        self.done = False
        self.reader: ReaderProcess | None = None
        self.use_reader = reader_installed()
        self.here = 0  # rows read in this process
        # The page the reader was asked for: its SQL, since when, its most rows.
        self.asked: tuple[str, float, int] | None = None
        super().__init__()
        try:
            # Called from one worker thread or another, never two at once.
            self.connection = sqlite3.connect(
                uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"database unavailable at {where}: {exc}") from exc
        self.long = long
        if long and self.use_reader:
            self._start_reader()

    def _next_batch(self) -> Any:
        if self.done:
            return None
        if self.asked is None and self.reader is not None and (self.long or self.reader.ready()):
            self._ask()
        batch = None
        if self.asked is not None:
            sql, started, limit = self.asked
            self.asked = None
            batch = self._from_reader()
        else:
            limit = min(self.batch_rows, HERE_ROWS)
            sql, started = self.sql_of(self.after, limit), perf_counter()
        if batch is None:
            if self.stopped:
                return None
            batch = self._read_here(sql)
            self.here += batch.num_rows
        self.finished.append((sql, started, batch.num_rows))
        self.done = batch.num_rows < limit
        if batch.num_rows == 0:
            return None
        # The next page starts after this one's last row.
        last = batch.slice(batch.num_rows - 1).to_pylist()[0]
        after = (columns.stored_instant(last["timestamp"]), int(last["id"]))
        if self.after is not None and after <= self.after:  # never read a page twice
            raise DatabaseError(f"database error at {self.where}: the range went back")
        self.after = after
        # More than a batch on its way: worth a process (pages read here until it is ready).
        if (
            not self.done
            and self.reader is None
            and self.use_reader
            and self.here >= self.batch_rows
        ):
            self._start_reader()
        if not self.done and self.reader is not None and self.reader.ready():
            self._ask()  # it reads the next page while this one's prices are rounded
        return columns.rounded_prices(batch)

    def _ask(self) -> None:
        assert self.reader is not None
        self.asked = (self.sql_of(self.after, self.batch_rows), perf_counter(), self.batch_rows)
        self.reader.ask(self.asked[0], self.batch_rows)

    def _start_reader(self) -> None:
        if not READERS.acquire(blocking=False):
            return  # as many running as there are cores: tried again at the next page
        self.use_reader = False  # one process a range, at most
        try:
            self.reader = ReaderProcess(self.uri)
        except OSError as exc:
            READERS.release()
            logger.warning("the SQLite reader process did not start, reading here: %s", exc)

    def _read_here(self, sql: str) -> Any:
        try:
            rows = self.connection.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.where) from exc
        return columns.tick_batch(rows, timestamps_as_text=True, rounded=False)

    def _from_reader(self) -> Any:
        """The page asked of the reader process, or None when it failed: the page is then
        read here, and so are the rest (an error of the database is raised as this
        process's own driver reports it)."""
        assert self.reader is not None
        try:
            return self.reader.receive()
        except ReaderFailed as exc:
            if not self.stopped:  # stop() killed it
                logger.warning("the SQLite reader process failed, reading here: %s", exc)
            self._stop_reader()
            return None

    def _stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
            READERS.release()

    def _interrupt(self) -> None:
        # The statement running here is interrupted, the reader process killed.
        reader = self.reader
        if reader is not None:
            reader.kill()
        with suppress(sqlite3.Error):
            self.connection.interrupt()

    def _close(self) -> None:
        self._stop_reader()
        with suppress(sqlite3.Error):
            self.connection.close()


@cache
def reader_installed() -> bool:
    """Whether the reader process can run: ``adbc-driver-sqlite`` is installed (it is
    looked up, never imported here)."""
    return importlib.util.find_spec("adbc_driver_sqlite") is not None


class ReaderFailed(Exception):
    """The reader process ended or said something other than a page."""


class ReaderProcess:
    """One ``sqlite_reader`` process, reading pages of ``uri`` as asked."""

    def __init__(self, uri: str) -> None:
        # The tickvault this process runs, first on the child's path, whatever it was
        # started from.
        root = str(Path(tickvault.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # Its errors go to a file, not a pipe: a pipe nobody reads can fill and stop it.
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", READER_MODULE, uri, str(SQLITE_BUSY_TIMEOUT_MS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=env,
            # Its own session: a Ctrl-C at the terminal is this process's to handle (the
            # reader ends when its input does, or is killed).
            start_new_session=True,
        )
        if sys.platform == "linux" and self.process.stdout is not None:
            import fcntl

            # A page is megabytes: through a larger pipe, in fewer turns of each process.
            with suppress(OSError):
                fcntl.fcntl(self.process.stdout, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.stream: Any = None

    def ready(self, timeout: float = 0) -> bool:
        """Whether it has started (or ended: ``receive()`` then says why), waiting at most
        ``timeout`` seconds."""
        if self.stream is not None or sys.platform == "win32":  # select() takes no pipe
            return True
        stdout = self.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        return bool(readable)

    def ask(self, sql: str, rows: int) -> None:
        """Ask for the page of ``sql``; ``receive()`` gives it."""
        stdin = self.process.stdin
        assert stdin is not None
        with suppress(OSError):  # the process has ended: receive() says why
            stdin.write(json.dumps({"sql": sql, "rows": rows}).encode() + b"\n")
            stdin.flush()

    def receive(self) -> Any:
        """The page asked for, a batch of ``tick_schema()``, prices as stored."""
        pa = columns.arrow()
        try:
            if self.stream is None:
                self.stream = pa.ipc.open_stream(self.process.stdout)
                self.stream.read_next_batch()  # the empty one that said it was ready
            batch = self.stream.read_next_batch()
        except (OSError, StopIteration, pa.ArrowException) as exc:
            raise ReaderFailed(self._failure(exc)) from exc
        if not batch.schema.equals(columns.tick_schema()):
            raise ReaderFailed(f"it gave a batch of another schema: {batch.schema}")
        return batch

    def _failure(self, exc: BaseException) -> str:
        """What the process said of its end (or, still running, what went wrong here)."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return f"{type(exc).__name__}: {exc}"
        self.errors.seek(0)
        said = self.errors.read().decode(errors="replace").strip().splitlines()
        return f"exit status {code}: {said[-1] if said else 'nothing said'}"

    def kill(self) -> None:
        """End the process now, from any thread (a page it is reading is dropped)."""
        with suppress(OSError):
            self.process.kill()

    def close(self) -> None:
        """Stop the process (a page it is reading is dropped) and wait for it."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
        self.process.kill()
        self.process.wait()
        self.errors.close()
