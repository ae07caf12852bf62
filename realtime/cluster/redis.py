"""Redis connections: one client factory, one reconnecting subscription.

Every Redis use of the gateway (feed, manager, presence, demand, publisher)
gets its client from `client()`, so timeouts are the same everywhere: a hung
Redis costs at most `REALTIME_REDIS_TIMEOUT` per call, never redis-py's
default of waiting forever. Pub/sub listeners use `Subscription`, which
reconnects with a jittered, capped backoff, checks that a quiet connection is
alive (`Liveness`), logs one line when Redis goes and one when it returns,
and counts reconnects for `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

# What redis-py raises when Redis is down, hung or restarting.
REDIS_ERRORS: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, TimeoutError)

# Silent intervals (the first ends with a PING) before a subscribed connection counts as dead.
MISSED = 3


def client(url: str, timeout: float) -> aioredis.Redis:
    """A Redis client whose every call gives up after `timeout` seconds."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=max(1.0, timeout),
    )


class Backoff:
    """Delays between half and all of min(cap, base * 2**n) seconds; `reset()` after a success.

    Jitter keeps a fleet of pods from reconnecting to a restarted Redis in
    lock-step; the cap bounds how long a recovered Redis goes unused.
    """

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class RedisSilent(TimeoutError):
    """Redis did not answer a PING on a subscribed connection."""


class Liveness:
    """A hung server is not a quiet channel.

    redis-py's `health_check_interval` PINGs an idle pub/sub connection but
    never waits for the answer, and the kernel keeps accepting writes to a
    stopped (SIGSTOP, swapped out, partitioned) Redis, so a subscriber would
    wait forever while `/ready` says all is well. `Liveness` PINGs after
    `interval` of silence and raises `RedisSilent` when nothing, not even the
    PONG, arrives within `MISSED` intervals.
    """

    def __init__(self, pubsub: PubSub, interval: float) -> None:
        self.pubsub = pubsub
        self.interval = interval
        self._heard = time.monotonic()
        self._pinged = False

    async def next_message(self) -> dict[str, Any] | None:
        """The next message (PONGs included), or None after `interval` of silence."""
        message: dict[str, Any] | None = await self.pubsub.get_message(timeout=self.interval)
        now = time.monotonic()
        if message is not None:
            self._heard, self._pinged = now, False
            return message
        silent = now - self._heard
        if silent > MISSED * self.interval:
            raise RedisSilent(f"no answer from Redis for {silent:.1f}s")
        if silent > self.interval and not self._pinged:
            self._pinged = True
            await self.pubsub.ping()
        return None


class Subscription:
    """Messages of some pub/sub channels, across Redis outages, until cancelled.

    `component` names the listener in logs and metrics (`feed`, `manager`).
    `on_up` runs after every (re)subscription, e.g. to log what was lost.
    """

    def __init__(self, component: str, url: str, channels: Sequence[str], *, timeout: float, retry_max: float,
                 on_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.component = component
        self.url = url
        self.channels = list(channels)
        self.timeout = timeout
        self.backoff = Backoff(cap=retry_max)
        self.on_up = on_up
        self.connected = False
        self.reconnects = 0

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Each published message as redis-py gives it (`type`, `channel`, `data`)."""
        while True:
            redis = client(self.url, self.timeout)
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                if self.backoff.attempts:
                    self.reconnects += 1
                    log.info("%s: subscribed to %s again", self.component, ", ".join(self.channels))
                self.connected = True
                self.backoff.reset()
                if self.on_up is not None:
                    await self.on_up()
                liveness = Liveness(pubsub, self.timeout)
                while True:
                    message = await liveness.next_message()
                    if message is not None and message["type"] == "message":
                        yield message
            except REDIS_ERRORS as exc:
                if self.connected or self.backoff.attempts == 0:
                    log.warning("%s: Redis unavailable (%s); retrying, every %.1fs at most",
                                self.component, exc.__class__.__name__, self.backoff.cap)
            finally:
                self.connected = False
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(*REDIS_ERRORS):
                    await redis.aclose()
            await asyncio.sleep(self.backoff.next_delay())
