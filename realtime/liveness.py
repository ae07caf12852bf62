"""Liveness of a Redis pub/sub connection: a hung server is not a quiet channel.

redis-py's `health_check_interval` PINGs an idle pub/sub connection but never
waits for the answer, and the kernel keeps accepting writes to a stopped
(SIGSTOP, swapped out, partitioned) Redis, so a subscriber would wait for
messages forever while `/ready` says all is well. `Liveness` PINGs after
`interval` of silence and raises when nothing, not even the PONG, arrives
within `MISSED` intervals, which sends the caller down its reconnect path.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio.client import PubSub

# Silent intervals (the first ends with a PING) before the connection counts as dead.
MISSED = 3


class RedisSilent(TimeoutError):
    """Redis did not answer a PING on a subscribed connection."""


class Liveness:
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
