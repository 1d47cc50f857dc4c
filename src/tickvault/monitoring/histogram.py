"""Latency histograms of fixed size: percentiles without keeping every sample.

Buckets grow geometrically (each 2 % wider than the last), so a percentile read from the
histogram is within 1 % of the exact one, whatever the spread, and memory is bounded by the
number of distinct buckets hit (at most ~1,000 between 1 µs and 100 s).
"""

import math
from bisect import bisect_left
from dataclasses import dataclass, field

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
MIN_MS = 0.001  # everything faster counts as 1 µs

# Prometheus buckets in seconds: sub-millisecond resolution where single inserts live.
PROMETHEUS_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_PROMETHEUS_BUCKETS_MS = tuple(b * 1000 for b in PROMETHEUS_BUCKETS_S)


def _index(value_ms: float) -> int:
    return math.ceil(math.log(max(value_ms, MIN_MS) / MIN_MS) / _LOG_GAMMA)


def _value(index: int) -> float:
    # The midpoint (in relative terms) of the bucket: within RELATIVE_ACCURACY of any
    # value that fell into it.
    return MIN_MS * 2 * _GAMMA**index / (_GAMMA + 1)


@dataclass
class LatencyHistogram:
    """Counts of durations in milliseconds; ``percentile(95)`` and friends read them."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)
    # Cumulative-free counts per Prometheus bucket (the last one is +Inf).
    prometheus: list[int] = field(default_factory=lambda: [0] * (len(PROMETHEUS_BUCKETS_S) + 1))

    def record(self, value_ms: float) -> None:
        self.count += 1
        self.total_ms += value_ms
        if value_ms > self.max_ms:
            self.max_ms = value_ms
        index = _index(value_ms)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.prometheus[bisect_left(_PROMETHEUS_BUCKETS_MS, value_ms)] += 1

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in milliseconds; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(_value(index), self.max_ms)
        return self.max_ms

    def copy(self) -> "LatencyHistogram":
        return LatencyHistogram(
            self.count, self.total_ms, self.max_ms, dict(self.buckets), list(self.prometheus)
        )

    def minus(self, earlier: "LatencyHistogram") -> "LatencyHistogram":
        """What was recorded since ``earlier`` (a copy of this histogram, taken before).

        The maximum cannot be subtracted: the window's maximum is bounded by its top bucket.
        """
        buckets = {
            index: count - earlier.buckets.get(index, 0)
            for index, count in self.buckets.items()
            if count - earlier.buckets.get(index, 0) > 0
        }
        top = max(buckets) if buckets else None
        return LatencyHistogram(
            count=self.count - earlier.count,
            total_ms=self.total_ms - earlier.total_ms,
            max_ms=min(self.max_ms, _value(top + 1)) if top is not None else 0.0,
            buckets=buckets,
            prometheus=[a - b for a, b in zip(self.prometheus, earlier.prometheus, strict=True)],
        )

    def merge(self, other: "LatencyHistogram") -> None:
        self.count += other.count
        self.total_ms += other.total_ms
        self.max_ms = max(self.max_ms, other.max_ms)
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.prometheus = [a + b for a, b in zip(self.prometheus, other.prometheus, strict=True)]
