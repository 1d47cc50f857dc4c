"""What a driver error means to a caller: try again later, refuse the row, or a real fault.

::

    kind_of(exc)      # Failure.UNAVAILABLE, Failure.ROW or Failure.FAULT
    reason_of(exc)    # the driver's first line, without SQLAlchemy's decoration
    with translated(url): ...   # driver errors out as one-line DatabaseError(Unavailable)s

- ``UNAVAILABLE``: the database cannot be reached, is starting or shutting down, or stayed
  locked past the busy timeout (deadlocks and serialization failures too): nothing was
  written and the same write may succeed later (HTTP 503 with Retry-After).
- ``ROW``: the data itself was refused (a constraint, a trigger, a value out of range): the
  same write will fail again, and in a batch it is one row's fault (isolate it).
- ``FAULT``: anything else (disk full, read-only or corrupt file, a bug): permanent until
  someone acts, and never reported as "unavailable".
"""

import enum
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from asyncpg.exceptions import _base as asyncpg_errors
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tickvault.database.url import display_url
from tickvault.errors import DatabaseError, DatabaseUnavailable

# What a database driver or the network raises (anything else is a bug, not a failure).
# asyncpg's InternalClientError: "cannot switch to state 21; another operation (2) is in
# progress" when a COPY starts on a connection the server has just ended.
DRIVER_ERRORS = (
    DBAPIError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


class Failure(enum.Enum):
    UNAVAILABLE = "unavailable"
    ROW = "row"
    FAULT = "fault"


# SQLSTATE classes and codes (PostgreSQL appendix A).
_PG_UNAVAILABLE_CLASSES = ("08", "57")  # connection exception, operator intervention
_PG_UNAVAILABLE_CODES = {"53300", "40001", "40P01", "55P03"}  # too many connections, ...
_PG_ROW_CLASSES = ("22", "23", "P0")  # data exception, integrity violation, PL/pgSQL raise
# asyncpg's InterfaceErrors are mostly a connection gone ("connection is closed"), except
# these: a query argument it cannot encode (the value's fault), a setting or a feature.
_ASYNCPG_ROW = (asyncpg_errors.DataError,)
_ASYNCPG_FAULT = (
    asyncpg_errors.ClientConfigurationError,
    asyncpg_errors.UnsupportedClientFeatureError,
    asyncpg_errors.UnsupportedServerFeatureError,
)
# SQLite primary result codes (the low byte of the extended code).
_SQLITE_UNAVAILABLE = {5, 6, 14}  # BUSY, LOCKED, CANTOPEN
_SQLITE_ROW = {18, 19, 20}  # TOOBIG, CONSTRAINT, MISMATCH


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def kind_of(exc: BaseException) -> Failure:
    """Which of the three ``exc`` (a SQLAlchemy, driver or OS error) is."""
    for error in _chain(exc):
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return Failure.UNAVAILABLE
        if isinstance(error, _ASYNCPG_ROW):
            return Failure.ROW
        if isinstance(error, _ASYNCPG_FAULT):
            return Failure.FAULT
        if isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError):
            return Failure.UNAVAILABLE
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            if sqlstate.startswith(_PG_UNAVAILABLE_CLASSES) or sqlstate in _PG_UNAVAILABLE_CODES:
                return Failure.UNAVAILABLE
            if sqlstate.startswith(_PG_ROW_CLASSES):
                return Failure.ROW
            return Failure.FAULT
        if isinstance(error, sqlite3.Error):
            code = getattr(error, "sqlite_errorcode", None)
            if code is None:
                # Errors of the sqlite3 module itself (closed connection, ...).
                return Failure.FAULT
            if code & 0xFF in _SQLITE_UNAVAILABLE:
                return Failure.UNAVAILABLE
            if code & 0xFF in _SQLITE_ROW:
                return Failure.ROW
            return Failure.FAULT
    return Failure.FAULT


def reason_of(exc: BaseException) -> str:
    """The driver's own message, first line only."""
    error: BaseException = getattr(exc, "orig", None) or exc
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def translate(exc: BaseException, where: str) -> DatabaseError:
    """A driver error as the one-line tickvault error to report; ``where`` names the database.

    ``DatabaseUnavailable`` when it may pass by itself, ``DatabaseError`` otherwise (a row's
    fault included: callers that isolate rows look at ``kind_of`` first).
    """
    if kind_of(exc) is Failure.UNAVAILABLE:
        return DatabaseUnavailable(f"database unavailable at {where}: {reason_of(exc)}")
    return DatabaseError(f"database error at {where}: {reason_of(exc)}")


@contextmanager
def translated(url: str | URL) -> Iterator[None]:
    """Driver errors raised in the block come out as ``translate``'s, naming ``url``."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translate(exc, display_url(url)) from exc
