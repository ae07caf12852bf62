"""Rate tiers: an asset's ticks at most `rate` per second, latest value wins, produced once per rate.

A connection granted `maxRate` r for an asset joins the room `<tier room>~r`
(`asset:BTC~2`) instead of the tier room itself. Every tick of the tier room
is offered to each of its rate tiers: a tier whose last send is at least
1/r s old and holds nothing sends the tick at once (the first tick after a
quiet spell is never held); otherwise the tick replaces whatever the tier
holds, and the one release timer of the pod (`run`) sends it when 1/r has
passed since the tier's last send. So the last tick of a burst arrives within
1/r s, every sent tick is the newest the tier has seen, and `seq` keeps
rising. Each tier's tick is framed once for all its members, like the
unthrottled room's (`delivery.send`): a throttled subscriber costs one
offer per tick per tier, shared, and fewer frames.

Overload (`realtime.send.overload`) sets a `ceiling`: every tier, and the
unthrottled tier rooms themselves, then send at most that many ticks per
second, the same for every connection, newest wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable, Iterator

from realtime.engine.server import SocketServer
from realtime.protocol import PriceUpdate
from realtime.rooms import rate_room

# Sends one tick to one room; returns how many it reached.
Send = Callable[[PriceUpdate, str], Awaitable[int]]


class RateTier:
    """One room's ticks at most `rate` per second (None: as the pod's ceiling allows)."""

    __slots__ = ("last", "pending", "rate", "room", "scheduled")

    def __init__(self, room: str, rate: float | None) -> None:
        self.room = room
        self.rate = rate
        self.last = float("-inf")  # loop time of the last send
        self.pending: PriceUpdate | None = None  # the newest tick not yet sent
        self.scheduled = False  # on the release heap

    def interval(self, ceiling: float | None) -> float:
        rate = self.rate if ceiling is None else ceiling if self.rate is None else min(self.rate, ceiling)
        return 0.0 if rate is None else 1.0 / rate


class RateTiers:
    """Every rate tier of this pod, by tier room, and the one timer that releases held ticks."""

    def __init__(self, sio: SocketServer) -> None:
        self.sio = sio
        self.ceiling: float | None = None  # the overload cap, ticks per second per asset (None: none)
        self._tiers: dict[str, dict[float | None, RateTier]] = {}  # tier room -> rate -> tier
        self._heap: list[tuple[float, int, RateTier]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self.held = 0  # ticks held for later (counted once per tier and tick)
        self.replaced = 0  # held ticks replaced by a newer one before their release

    def room(self, base: str, rate: float) -> str:
        """The room of `base`'s ticks at most `rate` per second; its tier exists from now on."""
        tiers = self._tiers.setdefault(base, {})
        name = rate_room(base, rate)
        if rate not in tiers:
            tiers[rate] = RateTier(name, rate)
        return name

    def rooms(self, base: str) -> list[str]:
        """The rate rooms of tier room `base`."""
        return [tier.room for rate, tier in self._tiers.get(base, {}).items() if rate is not None]

    def tiers(self) -> Iterator[RateTier]:
        for tiers in self._tiers.values():
            yield from tiers.values()

    def offer(self, update: PriceUpdate, base: str, now: float) -> list[str]:
        """A tick of tier room `base`: the rooms to send it to now (the others hold it for the timer)."""
        tiers = self._tiers.get(base)
        ceiling = self.ceiling
        if tiers is None:
            if ceiling is None:
                return [base]
            tiers = self._tiers[base] = {}
        if None not in tiers and ceiling is not None:
            tiers[None] = RateTier(base, None)  # the unthrottled room, under overload
        now_rooms: list[str] = []
        if None not in tiers:
            now_rooms.append(base)
        for rate, tier in list(tiers.items()):
            if rate is not None and not tier.scheduled and not self.sio.room_size(tier.room):
                del tiers[rate]  # nobody left at this rate
                continue
            interval = tier.interval(ceiling)
            if tier.pending is None and now - tier.last >= interval:
                tier.last = now
                now_rooms.append(tier.room)
                continue
            if tier.pending is not None:
                self.replaced += 1
            tier.pending = update
            self.held += 1
            if not tier.scheduled:
                tier.scheduled = True
                due = tier.last + interval
                heapq.heappush(self._heap, (due, next(self._order), tier))
                if self._heap[0][2] is tier:
                    self._wake.set()
        if not tiers:
            del self._tiers[base]
        return now_rooms

    def _release(self, now: float) -> list[tuple[PriceUpdate, str]]:
        """Take the held ticks that are due; forget the unthrottled rooms' tiers once overload has ended."""
        due: list[tuple[PriceUpdate, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, tier = heapq.heappop(heap)
            tier.scheduled = False
            if tier.pending is not None:
                due.append((tier.pending, tier.room))
                tier.pending = None
                tier.last = now
        if self.ceiling is None:
            for tiers in self._tiers.values():
                base = tiers.get(None)
                if base is not None and not base.scheduled:
                    del tiers[None]
        return due

    async def run(self, send: Send) -> None:
        """The one release timer: send each held tick when its tier's interval has passed, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            wait = self._heap[0][0] - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            for update, room in self._release(loop.time()):
                await send(update, room)
