"""Candles: one asset's bars at one interval, built from its trades (or its quote's mid), exactly.

A candle covers `[t, t + length)` of the feed's own clock: every trade
(or tick) lands in the bar its `ts` falls in, so pods that heard the same
feed build the same bars whatever their wall clocks say. Prices stay
`Decimal`s, never floats: `v` is the exact sum of the quantities, `n` the
count. A bar closes when a trade of a later interval arrives, or when the
pod's clock is `GRACE_MS` past its end (the feed went quiet); a trade older
than the open bar is late and left out.

A bar is `whole` when this pod heard the feed from before the bar began
(`Series.since`); only whole bars are written to the shared store, so
a pod that started mid-interval never records a partial bar for others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from realtime.feed.parsing import plain
from realtime.protocol import CandleEvent

# Interval name -> length in ms (SPEC §9). Bars start at multiples of the length since the epoch (UTC).
INTERVALS: dict[str, int] = {"1s": 1_000, "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000,
                             "1d": 86_400_000}
# How long past its end an open bar waits for a late trade before the pod's clock closes it.
GRACE_MS = 2_000
ZERO = Decimal(0)


def text(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros past the point."""
    return plain(format(value, "f"))


@dataclass(slots=True)
class Candle:
    t: int
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741
    c: Decimal
    v: Decimal
    n: int

    def add(self, price: Decimal, qty: Decimal) -> None:
        self.h = max(self.h, price)
        self.l = min(self.l, price)
        self.c = price
        self.v += qty
        self.n += 1

    def event(self, asset: str, interval: str, *, closed: bool) -> CandleEvent:
        return {"asset": asset, "interval": interval, "t": self.t, "o": text(self.o), "h": text(self.h),
                "l": text(self.l), "c": text(self.c), "v": text(self.v), "n": self.n, "closed": closed}


@dataclass(frozen=True, slots=True)
class Closed:
    """A closed bar as every pod holds it, and when this pod closed it (ms, for the delayed tiers)."""

    event: CandleEvent
    closed_at: int


class Series:
    """One asset's bars at one interval: the open one and the last `keep` closed ones."""

    def __init__(self, asset: str, interval: str, keep: int, since: int) -> None:
        self.asset = asset
        self.interval = interval
        self.length = INTERVALS[interval]
        self.since = since  # ms: this pod hears the feed from here on
        self.open: Candle | None = None
        self.closed: deque[Closed] = deque(maxlen=keep)
        self.total = 0  # closed bars ever appended (`released` counts against it)
        self.released: dict[int, int] = {}  # delay (s) -> closed bars its delayed room has been sent
        self.changed = False  # the open bar moved since it was last sent
        self.sent_at = float("-inf")  # loop time the open bar was last sent
        self.late = 0

    def start_of(self, ts: int) -> int:
        return ts - ts % self.length

    def whole(self, candle: Candle) -> bool:
        return candle.t >= self.since

    def add(self, price: Decimal, qty: Decimal, ts: int) -> Candle | None:
        """Put one trade (or tick) in its bar; return the bar it closed, if any."""
        t = self.start_of(ts)
        done: Candle | None = None
        candle = self.open
        if candle is not None and t < candle.t:
            self.late += 1
            return None
        if candle is not None and t > candle.t:
            done, candle = candle, None
        if candle is None:
            self.open = Candle(t, price, price, price, price, qty, 1)
        else:
            candle.add(price, qty)
        self.changed = True
        return done

    def expire(self, now_ms: int) -> Candle | None:
        """Close the open bar if the pod's clock is past its end and the grace."""
        candle = self.open
        if candle is not None and now_ms >= candle.t + self.length + GRACE_MS:
            self.open = None
            self.changed = False
            return candle
        return None

    def append(self, event: CandleEvent, closed_at: int) -> None:
        """A closed bar as the shared store holds it."""
        if self.closed and event["t"] <= self.closed[-1].event["t"]:
            return
        self.closed.append(Closed(event, closed_at))
        self.total += 1

    def history(self, count: int, delay: int = 0) -> list[CandleEvent]:
        """The last `count` closed bars (for a delayed tier: those its room has been sent), oldest first."""
        closed = list(self.closed)
        if delay:
            unsent = self.total - self.released.get(delay, 0)
            closed = closed[: len(closed) - unsent] if unsent else closed
        return [entry.event for entry in closed[-count:]] if count else []

    def open_event(self) -> CandleEvent | None:
        return None if self.open is None else self.open.event(self.asset, self.interval, closed=False)
