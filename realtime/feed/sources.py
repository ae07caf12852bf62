"""Price sources: where raw feed messages come from, chosen by URL.

A source is an async iterator of raw messages (JSON bytes) plus a `connected`
flag for readiness. `redis://` subscribes to the price channel and reconnects
on its own; `memory://` (embedded mode) runs the random-walk simulator in
process and feeds its ticks through the same validation as Redis would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import orjson

from realtime.cluster.redis import Subscription
from realtime.config import Settings
from realtime.feed.simulator import RandomWalk
from realtime.metrics import RedisLink


class PriceSource(Protocol):
    @property
    def connected(self) -> bool:
        """Whether ticks can arrive now (for /ready)."""

    def links(self) -> list[RedisLink]:
        """Its Redis connections, for /metrics."""

    def messages(self) -> AsyncIterator[bytes]: ...


class SimulatedSource:
    """Embedded mode: `rate` ticks per second per asset from a random walk."""

    def __init__(self, settings: Settings) -> None:
        self.walk = RandomWalk(settings.catalog)
        self.rate = settings.simulated_rate

    @property
    def connected(self) -> bool:
        return True

    def links(self) -> list[RedisLink]:
        return []

    async def messages(self) -> AsyncIterator[bytes]:
        if self.rate <= 0:
            await asyncio.Event().wait()  # simulation off: a source that never ticks
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            for asset in self.walk.assets:
                yield orjson.dumps(self.walk.tick(asset))
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))


class RedisSource:
    """Subscribes to the price channel; reconnects with jittered backoff, forever."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.subscription = Subscription("price feed", settings.redis_url, [settings.price_channel],
                                         timeout=settings.redis_timeout, retry_max=settings.redis_retry_max)

    @property
    def connected(self) -> bool:
        return self.subscription.connected

    def links(self) -> list[RedisLink]:
        return [RedisLink("feed", lambda: self.subscription.connected, lambda: self.subscription.reconnects)]

    async def messages(self) -> AsyncIterator[bytes]:
        async for message in self.subscription.messages():
            yield message["data"]


def price_source(settings: Settings) -> PriceSource:
    if settings.embedded:
        return SimulatedSource(settings)
    return RedisSource(settings)
