"""A latency histogram cheap enough to fill at 100 000+ samples per second.

Fixed 50 µs buckets up to 10 s (the last bucket holds everything slower),
plus the exact maximum: percentiles are good to one bucket, which is far
below the millisecond figures the report prints.
"""

from __future__ import annotations

from collections.abc import Mapping

BUCKET_US = 50
BUCKETS = 200_000  # 10 s


class Histogram:
    """Counts of publish→receive latencies, mergeable across workers."""

    __slots__ = ("buckets", "count", "max_us")

    def __init__(self) -> None:
        self.buckets: list[int] = [0] * BUCKETS
        self.count = 0
        self.max_us = 0

    def add(self, latency_us: int) -> None:
        index = latency_us // BUCKET_US
        self.buckets[index if 0 <= index < BUCKETS else (0 if index < 0 else BUCKETS - 1)] += 1
        self.count += 1
        if latency_us > self.max_us:
            self.max_us = latency_us

    def extend(self, latencies_us: list[int]) -> None:
        """`add` for many samples, in one loop (the load generator's hot path)."""
        buckets = self.buckets
        last = BUCKETS - 1
        for latency_us in latencies_us:
            index = latency_us // BUCKET_US
            buckets[index if 0 <= index <= last else (0 if index < 0 else last)] += 1
        self.count += len(latencies_us)
        self.max_us = max(self.max_us, max(latencies_us))

    def sparse(self) -> dict[str, int]:
        """The non-empty buckets, for sending between processes."""
        return {str(i): n for i, n in enumerate(self.buckets) if n}

    def merge(self, sparse: Mapping[str, int], count: int, max_us: int) -> None:
        for index, n in sparse.items():
            self.buckets[int(index)] += n
        self.count += count
        self.max_us = max(self.max_us, max_us)

    def percentile_ms(self, fraction: float) -> float | None:
        """Upper edge of the bucket holding the `fraction` quantile, in ms (None when empty)."""
        if self.count == 0:
            return None
        rank = fraction * self.count
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if n and seen >= rank:
                return min((index + 1) * BUCKET_US, self.max_us) / 1000
        return self.max_us / 1000
