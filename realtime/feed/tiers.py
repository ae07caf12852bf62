"""Delayed-data tiers: the same prices, at least `delay` seconds late, one tick per asset per second.

Exchanges license real-time data per user; users without the licence get
prices late. A connection whose token has the claim `delay` (one of
`REALTIME_DELAY_TIERS`) joins `asset:<A>@<delay>` instead of `asset:<A>`.
Each tier keeps, per asset, a bounded history of the ticks not yet old
enough, conflated to one per second, and one timer per pod releases them
when they come of age: the delayed stream is produced once per tier and
asset and fanned out like the real-time one (frame once), never by a timer
per connection.

A tick is due at `max(ts, arrival) + delay`, rounded up to the next whole
second: every tick a tier sends is at least `delay` old by its own `ts` and
by this pod's clock, and the newest tick of each second wins. The history is
a ring of fixed-size integer records (`delay` + 2 of them per asset, 40
bytes each), allocated at an asset's first tick: its memory is known in
advance and reported at `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator

from realtime.protocol import PriceUpdate
from realtime.rooms import tier_room

logger = logging.getLogger(__name__)

# One record: (due second, bid, ask, seq, ts).
FIELDS = 5


class History:
    """A ring of records for one asset in one tier, conflated to one per due second."""

    __slots__ = ("capacity", "count", "head", "records")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records = array("q", bytes(8 * FIELDS * capacity))
        self.head = 0
        self.count = 0

    @property
    def nbytes(self) -> int:
        return self.records.itemsize * len(self.records)

    def add(self, due: int, bid: int, ask: int, seq: int, ts: int) -> None:
        records = self.records
        if self.count:
            last = (self.head + self.count - 1) % self.capacity * FIELDS
            if records[last] == due:  # same second: the newer tick replaces it
                records[last + 1], records[last + 2], records[last + 3], records[last + 4] = bid, ask, seq, ts
                return
        if self.count == self.capacity:  # cannot happen while the timer runs; bounded if it stalls
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
        slot = (self.head + self.count) % self.capacity * FIELDS
        records[slot], records[slot + 1], records[slot + 2], records[slot + 3], records[slot + 4] = \
            due, bid, ask, seq, ts
        self.count += 1

    def release(self, now: int) -> tuple[int, int, int, int] | None:
        """Remove every record due by second `now`; return the newest one's (bid, ask, seq, ts)."""
        newest: tuple[int, int, int, int] | None = None
        records = self.records
        while self.count and records[self.head * FIELDS] <= now:
            at = self.head * FIELDS
            newest = (records[at + 1], records[at + 2], records[at + 3], records[at + 4])
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
        return newest


class Tier:
    """One delay: a history per asset and the latest released tick of each."""

    def __init__(self, delay: int, decimals: dict[str, int]) -> None:
        self.delay = delay
        self.decimals = decimals
        self.histories: dict[str, History] = {}
        self.latest: dict[str, PriceUpdate] = {}
        self.rooms = {asset: tier_room(asset, delay) for asset in decimals}

    def add(self, update: PriceUpdate, arrived_ms: int) -> None:
        asset = update["asset"]
        history = self.histories.get(asset)
        if history is None:
            history = self.histories[asset] = History(self.delay + 2)
        due = -(-(max(update["ts"], arrived_ms) + self.delay * 1000) // 1000)  # ceil to the second
        history.add(due, update["bid"], update["ask"], update["seq"], update["ts"])

    def release(self, now: int) -> Iterator[PriceUpdate]:
        for asset, history in self.histories.items():
            record = history.release(now)
            if record is not None:
                bid, ask, seq, ts = record
                update: PriceUpdate = {"asset": asset, "bid": bid, "ask": ask, "decimals": self.decimals[asset],
                                       "seq": seq, "ts": ts}
                self.latest[asset] = update
                yield update


Send = Callable[[PriceUpdate, str], Awaitable[int]]


class Tiers:
    """Every delayed tier of this pod (the real-time tier 0 needs none of this)."""

    def __init__(self, delays: list[int], decimals: dict[str, int]) -> None:
        self.tiers = {delay: Tier(delay, decimals) for delay in delays if delay > 0}

    def add(self, update: PriceUpdate) -> None:
        """An accepted tick enters every tier's history (hot path: once per tick per tier)."""
        if self.tiers:
            arrived = time.time_ns() // 1_000_000
            for tier in self.tiers.values():
                tier.add(update, arrived)

    def latest(self, asset: str, delay: int) -> PriceUpdate | None:
        """The latest tick at least `delay` old that this pod has released."""
        tier = self.tiers.get(delay)
        return tier.latest.get(asset) if tier is not None else None

    def memory(self) -> Iterator[tuple[int, str, int, int]]:
        """(delay, asset, records held, bytes allocated) of every history."""
        for delay, tier in self.tiers.items():
            for asset, history in tier.histories.items():
                yield delay, asset, history.count, history.nbytes

    async def run(self, send: Send) -> None:
        """Release due ticks at every whole second until cancelled; `send(update, room)` fans one out."""
        if not self.tiers:
            return
        while True:
            now = time.time()
            await asyncio.sleep(int(now) + 1 - now + 0.001)
            second = int(time.time())
            for tier in self.tiers.values():
                for update in tier.release(second):
                    try:
                        await send(update, tier.rooms[update["asset"]])
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        logger.exception("delayed fan-out of %s failed", update["asset"])
