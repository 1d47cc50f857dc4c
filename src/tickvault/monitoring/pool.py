"""Connection pool figures, from whatever the pool class offers."""

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool


@dataclass
class PoolCounters:
    """Counted from pool events: how often connections were opened, lent and invalidated."""

    connects: int = 0
    checkouts: int = 0
    invalidations: int = 0
    _listeners: list[tuple[Any, str, Any]] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        def on_connect(*_: Any) -> None:
            self.connects += 1

        def on_checkout(*_: Any) -> None:
            self.checkouts += 1

        def on_invalidate(*_: Any) -> None:
            self.invalidations += 1

        for name, fn in (
            ("connect", on_connect),
            ("checkout", on_checkout),
            ("invalidate", on_invalidate),
        ):
            event.listen(engine.pool, name, fn)
            self._listeners.append((engine, name, fn))

    def detach(self) -> None:
        # engine.dispose() replaces the pool and carries its listeners over: remove them
        # from whichever pool the engine has now.
        for engine, name, fn in self._listeners:
            if event.contains(engine.pool, name, fn):
                event.remove(engine.pool, name, fn)
        self._listeners.clear()


def pool_status(pool: Pool, counters: PoolCounters | None = None) -> dict[str, Any]:
    """Size, checked out, overflow, checked in (QueuePool), plus the event counters.

    ``overflow``: connections open beyond the pool size, never negative. QueuePool's own
    ``overflow()`` counts from ``-size`` (it is ``-3`` while two of five are open).
    """
    status: dict[str, Any] = {"pool_class": type(pool).__name__}
    for name in ("size", "checkedout", "overflow", "checkedin"):
        method = getattr(pool, name, None)
        if callable(method):
            status[{"checkedout": "checked_out", "checkedin": "checked_in"}.get(name, name)] = (
                method()
            )
    if "overflow" in status:
        status["overflow"] = max(0, status["overflow"])
    max_overflow = getattr(pool, "_max_overflow", None)
    timeout = getattr(pool, "_timeout", None)
    if max_overflow is not None:
        status["max_overflow"] = max_overflow
    if timeout is not None:
        status["timeout_seconds"] = timeout
    if counters is not None:
        status.update(
            connects=counters.connects,
            checkouts=counters.checkouts,
            invalidations=counters.invalidations,
        )
    return status
