"""Price sources: where raw feed messages come from, chosen by URL.

A source is an async iterator of raw messages (JSON bytes) plus a `connected`
flag for readiness. `redis://` subscribes to the price channel and reconnects
on its own; `memory://` (embedded mode) runs the random-walk simulator in
process and feeds its ticks through the same validation as Redis would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from .backoff import Backoff
from .config import Settings
from .liveness import Liveness
from .simulator import RandomWalk

log = logging.getLogger("realtime.sources")


class PriceSource(Protocol):
    @property
    def connected(self) -> bool: ...

    def messages(self) -> AsyncIterator[bytes]: ...


class SimulatedSource:
    """Embedded mode: `rate` ticks per second per asset from a random walk."""

    def __init__(self, settings: Settings) -> None:
        self.walk = RandomWalk(settings.catalog)
        self.rate = settings.simulated_rate

    @property
    def connected(self) -> bool:
        return True

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
        self.url = settings.redis_url
        self.channel = settings.price_channel
        self.timeout = settings.redis_timeout
        self.backoff = Backoff(cap=settings.redis_retry_max)
        self.reconnects = 0
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def messages(self) -> AsyncIterator[bytes]:
        while True:
            client = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                health_check_interval=max(1.0, self.timeout),
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self.backoff.attempts:
                    self.reconnects += 1
                    log.info("price feed: subscribed to %s again", self.channel)
                self._connected = True
                self.backoff.reset()
                liveness = Liveness(pubsub, self.timeout)
                while True:
                    message = await liveness.next_message()
                    if message is not None and message["type"] == "message":
                        yield message["data"]
            except (aioredis.RedisError, OSError) as exc:
                delay = self.backoff.next_delay()
                if self._connected or self.backoff.attempts == 1:
                    log.warning("price feed: Redis unavailable (%s); retrying, every %.1fs at most",
                                exc.__class__.__name__, self.backoff.cap)
                self._connected = False
                await asyncio.sleep(delay)
            finally:
                self._connected = False
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()


def price_source(settings: Settings) -> PriceSource:
    if settings.embedded:
        return SimulatedSource(settings)
    return RedisSource(settings)
