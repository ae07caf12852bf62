"""Restart offsets shared through Redis, so a pod started after a feed restart numbers like the others.

Pods that watched a publisher restart all move their wire `seq` on by the
same offset (`sequence`); a pod that starts later has not seen it. So every
pod writes the offset it chose to the hash `<namespace>:seq-offsets`
(`realtime.namespace`; without `REALTIME_NAMESPACE`, `<REALTIME_PRICE_CHANNEL>:seq-offsets`)
(asset -> offset; all pods write the same value), and a starting pod reads
the hash before it consumes the feed. The write happens in the background:
a Redis that hangs never holds up ticks. Without Redis (embedded mode) there
is one pod and nothing to share.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from realtime.backplane.connections import REDIS_ERRORS, client
from realtime.feed.prices import PriceBook

logger = logging.getLogger(__name__)


class Restarts(Protocol):
    """Where pods share the `seq` offsets their feed restarts chose."""

    async def load(self, book: PriceBook) -> None:
        """Give `book` the offsets other pods chose before this one started."""

    def save(self, asset: str, offset: int) -> None:
        """Record a new offset (in the background)."""

    async def aclose(self) -> None: ...


class LocalRestarts:
    """Embedded mode: this process is the only pod."""

    async def load(self, book: PriceBook) -> None:
        return None

    def save(self, asset: str, offset: int) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisRestarts:
    """The offsets in one Redis hash per price channel."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self.redis = client(url, timeout)
        self.key = key
        self._writes: set[asyncio.Task[None]] = set()

    async def load(self, book: PriceBook) -> None:
        try:
            stored = await self.redis.hgetall(self.key)
        except REDIS_ERRORS as exc:
            logger.warning("feed: cannot read seq offsets (%s); numbering from upstream seq", exc.__class__.__name__)
            return
        offsets: dict[str, int] = {}
        for field, value in stored.items():
            try:
                offsets[field.decode() if isinstance(field, bytes) else str(field)] = int(value)
            except (UnicodeDecodeError, ValueError):
                continue
        book.adopt_offsets(offsets)
        if offsets:
            logger.info("feed: seq offsets from earlier feed restarts: %s", offsets)

    def save(self, asset: str, offset: int) -> None:
        task = asyncio.create_task(self._write(asset, offset), name=f"seq-offset-{asset}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, asset: str, offset: int) -> None:
        try:
            await self.redis.hset(self.key, asset, str(offset))
        except REDIS_ERRORS as exc:
            logger.warning("feed: cannot store the seq offset of %s (%s)", asset, exc.__class__.__name__)

    async def aclose(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await self.redis.aclose()
