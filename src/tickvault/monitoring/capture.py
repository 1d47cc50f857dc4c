"""Statement capture from SQLAlchemy's cursor events: no caller code needed.

``attach(engine, recorder)`` listens on the engine's ``before_cursor_execute``,
``after_cursor_execute`` and ``handle_error`` events and hands each statement's type,
table, duration (``time.perf_counter``) and row count to ``recorder``. Statements run with
the execution option ``tickvault_internal=True`` (the monitor's own) are skipped.

Rows: an executemany counts one row per parameter set; an ``insertmanyvalues`` batch (one
multi-row INSERT) counts the rows the driver reports; anything else counts the driver's
rowcount when it gives one, else 1.
"""

import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from tickvault.monitoring.statements import classify

INTERNAL = "tickvault_internal"
_STARTED = "tickvault_started"
# Recorders attached to each engine, for writes that bypass the cursor (asyncpg's COPY).
_RECORDERS: "weakref.WeakKeyDictionary[Engine, list[Recorder]]" = weakref.WeakKeyDictionary()


class Recorder(Protocol):
    def record_statement(
        self, statement: str, duration_ms: float, rows: int, parameter_count: int
    ) -> None: ...

    def record_error(self, statement: str, duration_ms: float) -> None: ...


def _sync(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def _is_internal(context: Any) -> bool:
    return context is not None and bool(context.execution_options.get(INTERNAL, False))


def attach(engine: Engine | AsyncEngine, recorder: Recorder) -> Callable[[], None]:
    """Start capturing ``engine``'s statements; returns a function that stops it."""
    target = _sync(engine)

    def before(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not _is_internal(context):
            conn.info.setdefault(_STARTED, []).append(perf_counter())

    def after(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if _is_internal(context):
            return
        started = conn.info.get(_STARTED)
        if not started:
            return
        duration_ms = (perf_counter() - started.pop()) * 1000
        if classify(statement) is None:
            return
        if many and isinstance(parameters, list):
            rows = len(parameters)
        else:
            rowcount = getattr(cursor, "rowcount", -1)
            rows = rowcount if isinstance(rowcount, int) and rowcount >= 0 else 1
        count = len(parameters) if isinstance(parameters, tuple | dict) and not many else 0
        recorder.record_statement(statement, duration_ms, rows, count)

    def on_error(context: ExceptionContext) -> None:
        execution = context.execution_context
        if _is_internal(execution) or context.connection is None:
            return
        started = context.connection.info.get(_STARTED)
        duration_ms = (perf_counter() - started.pop()) * 1000 if started else 0.0
        if context.statement is not None and classify(context.statement) is not None:
            recorder.record_error(context.statement, duration_ms)

    event.listen(target, "before_cursor_execute", before)
    event.listen(target, "after_cursor_execute", after)
    event.listen(target, "handle_error", on_error)
    _RECORDERS.setdefault(target, []).append(recorder)

    def detach() -> None:
        event.remove(target, "before_cursor_execute", before)
        event.remove(target, "after_cursor_execute", after)
        event.remove(target, "handle_error", on_error)
        _RECORDERS.get(target, []).remove(recorder)

    return detach


def report(engine: Engine | AsyncEngine, statement: str, started: float, rows: int) -> None:
    """Report a write made outside SQLAlchemy's cursor, begun at ``perf_counter()`` value
    ``started``, to the engine's monitors."""
    duration_ms = (perf_counter() - started) * 1000
    for recorder in list(_RECORDERS.get(_sync(engine), ())):
        recorder.record_statement(statement, duration_ms, rows, 0)


@asynccontextmanager
async def measured(engine: Engine | AsyncEngine, statement: str, rows: int) -> AsyncIterator[None]:
    """Report a write made outside SQLAlchemy's cursor (COPY) to the engine's monitors."""
    recorders = list(_RECORDERS.get(_sync(engine), ()))
    started = perf_counter()
    try:
        yield
    except BaseException:
        for recorder in recorders:
            recorder.record_error(statement, (perf_counter() - started) * 1000)
        raise
    duration_ms = (perf_counter() - started) * 1000
    for recorder in recorders:
        recorder.record_statement(statement, duration_ms, rows, 0)
