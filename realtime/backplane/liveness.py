"""Liveness: telling a hung Redis from a quiet channel on a subscribed connection."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, Protocol

# Silent intervals (the first ends with a PING) before a subscribed connection counts as dead.
MISSED = 3


class Listener(Protocol):
    """What `Liveness` needs of a pub/sub connection (redis-py's `PubSub`, or `ShardedPubSub`)."""

    async def get_message(self, ignore_subscribe_messages: bool = False,
                          timeout: float | None = 0.0) -> dict[str, Any] | None: ...

    def ping(self) -> Awaitable[Any]: ...


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

    def __init__(self, pubsub: Listener, interval: float) -> None:
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
