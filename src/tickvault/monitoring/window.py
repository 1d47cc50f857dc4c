"""A fixed trailing window over counters that only grow: the same figures for every reader.

::

    window = TrailingWindow(seconds=10, started_at=clock())
    window.note(clock(), snapshot)      # before counting anything, under the counters' lock
    start, earlier = window.start(clock())   # earlier is None: nothing counted since start

Time is cut into slots of ``seconds / 10`` on a fixed grid. At the first thing counted in a
slot, ``note`` keeps a mark: the counters as they stood when the slot began (nothing was
counted between its start and that moment, or a mark would already exist). A reader at
``now`` takes the slot boundary ``s`` at or before ``now - seconds`` and needs the counters
as they stood at ``s``: the earliest mark at or after ``s`` (nothing was counted from ``s``
up to it, or an earlier slot would hold a mark), or the counters now when there is none.
So the window is always ``[s, now]``, between ``seconds`` and a slot longer, exact to the
statement, and reading changes nothing: any number of readers, at any pace, see the figures
of the same trailing window. Memory: at most ``slots + 2`` marks.
"""

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TrailingWindow(Generic[T]):
    def __init__(self, seconds: float, started_at: float, zero: T, slots: int = 10) -> None:
        if seconds <= 0:
            raise ValueError("window seconds must be positive")
        self.seconds = seconds
        self.slot_seconds = seconds / slots
        self.started_at = started_at
        # Before the start everything was zero.
        self._marks: deque[tuple[float, T]] = deque([(started_at, zero)])
        self._last_slot = self._slot(started_at)

    def _slot(self, at: float) -> int:
        return math.floor(at / self.slot_seconds)

    def note(self, now: float, snapshot: Callable[[], T]) -> None:
        """Call before counting something at ``now``: keeps a mark at a new slot's start."""
        slot = self._slot(now)
        if slot <= self._last_slot:
            return
        self._last_slot = slot
        self._marks.append((slot * self.slot_seconds, snapshot()))
        self._prune(now)

    def start(self, now: float) -> tuple[float, T | None]:
        """When the window ending at ``now`` starts, and the counters then (``None``: as now).

        Until the window is ``seconds`` old it starts when the counting started.
        """
        boundary = self._prune(now)
        if boundary <= self.started_at:
            return self.started_at, self._marks[0][1]
        return boundary, self._marks[0][1] if self._marks else None

    def _prune(self, now: float) -> float:
        # The boundary only moves on: a mark before it is never the answer again (the
        # start's mark goes once the window no longer reaches back to the start).
        boundary = self._slot(now - self.seconds) * self.slot_seconds
        while self._marks and self._marks[0][0] < boundary:
            self._marks.popleft()
        return boundary
