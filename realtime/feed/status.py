"""Liveness of each asset: live, stale or halted, and since when.

A board that keeps showing the last price of an asset whose feed died is
worse than a blank one. Each asset is:

- `live` while ticks are accepted;
- `stale` when none was accepted for its stale-after (`REALTIME_STALE_AFTER`,
  or the catalog's `NAME:DECIMALS:STALE_AFTER`), and from start-up until its
  first tick; the next accepted tick makes it live again;
- `halted` after `{"asset", "status": "halted"}` on the feed, until
  `{"asset", "status": "open"}` (its ticks are dropped meanwhile).

A change is queued as a `price:status` payload; ingest sends the queue to the
asset's rooms before the tick that caused it. The hot path pays one clock
read per accepted tick; staleness is found by one sweep a fraction of a
second, whatever the number of assets' ticks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum

from realtime.protocol import PriceStatus

# How often the sweep looks for assets that went quiet, at most (s).
SWEEP_EVERY = 0.5


class Status(StrEnum):
    LIVE = "live"
    STALE = "stale"
    HALTED = "halted"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AssetState:
    """One asset's status and its last accepted tick (monotonic seconds)."""

    __slots__ = ("last_tick", "name", "since", "stale_after", "status")

    def __init__(self, name: str, stale_after: float) -> None:
        self.name = name
        self.stale_after = stale_after
        self.status = Status.STALE
        self.since = now_ms()
        self.last_tick: float | None = None

    def payload(self) -> PriceStatus:
        return {"asset": self.name, "status": self.status.value, "since": self.since}


class Statuses:
    """The status of every catalog asset, and the changes not yet sent."""

    def __init__(self, stale_after: dict[str, float]) -> None:
        self.assets = {name: AssetState(name, seconds) for name, seconds in stale_after.items()}
        self.changes: list[PriceStatus] = []

    def get(self, asset: str) -> PriceStatus:
        return self.assets[asset].payload()

    def halted(self, asset: str) -> bool:
        return self.assets[asset].status is Status.HALTED

    def ticked(self, asset: str) -> None:
        """An accepted tick: the asset is live (hot path: one clock read, one comparison)."""
        state = self.assets[asset]
        state.last_tick = time.monotonic()
        if state.status is Status.STALE:
            self._set(state, Status.LIVE)

    def halt(self, asset: str) -> None:
        self._set(self.assets[asset], Status.HALTED)

    def reopen(self, asset: str) -> None:
        state = self.assets[asset]
        if state.status is Status.HALTED:
            fresh = self._fresh(state, time.monotonic())
            self._set(state, Status.LIVE if fresh else Status.STALE)

    def sweep(self, now: float) -> None:
        """Mark live assets stale when their last tick is older than their stale-after."""
        for state in self.assets.values():
            if state.status is Status.LIVE and not self._fresh(state, now):
                self._set(state, Status.STALE)

    def drain(self) -> list[PriceStatus]:
        changes, self.changes = self.changes, []
        return changes

    def ages(self, now: float) -> Iterable[tuple[str, float | None]]:
        """Seconds since each asset's last accepted tick (None: none yet)."""
        for state in self.assets.values():
            yield state.name, None if state.last_tick is None else now - state.last_tick

    def _fresh(self, state: AssetState, now: float) -> bool:
        return state.last_tick is not None and now - state.last_tick < state.stale_after

    def _set(self, state: AssetState, status: Status) -> None:
        if state.status is status:
            return
        state.status = status
        state.since = now_ms()
        self.changes.append(state.payload())

    async def watch(self, send: Callable[[list[PriceStatus]], Awaitable[None]]) -> None:
        """Sweep for stale assets until cancelled; `send` delivers the changes."""
        interval = min([SWEEP_EVERY, *(s.stale_after / 4 for s in self.assets.values())])
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic())
            if self.changes:
                await send(self.drain())
