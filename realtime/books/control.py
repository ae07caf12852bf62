"""Snapshot requests: how a pod whose book broke asks the feed for a snapshot.

With Redis, `{"type": "book:resync", "asset"}` on `<REALTIME_PRICE_CHANNEL>:control`
(classic pub/sub, also on a Redis Cluster), published in the background so the
feed loop never waits on Redis; requests made while Redis is away are kept
(one per asset) and sent when it returns. In embedded mode the simulator
answers in process (`SimulatedSource.ask`). `realtime.backends` picks one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import orjson

from realtime.backplane.connections import REDIS_ERRORS, Backoff, client
from realtime.config import Settings
from realtime.protocol import BOOK_RESYNC

logger = logging.getLogger(__name__)


def control_channel(price_channel: str) -> str:
    return f"{price_channel}:control"


def resync_request(asset: str) -> bytes:
    return orjson.dumps({"type": BOOK_RESYNC, "asset": asset})


class SnapshotRequests(Protocol):
    def ask(self, asset: str) -> None:
        """`asset`'s book needs a snapshot; never waits."""

    async def run(self) -> None:
        """Send the requests, until cancelled (or at once, when there is nothing to run)."""

    async def aclose(self) -> None: ...


class SimulatorRequests:
    """Embedded mode: the simulator of this process answers (`ask` is its own)."""

    def __init__(self, ask: Callable[[str], None]) -> None:
        self.ask = ask

    async def run(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ControlChannel:
    """Publishes this pod's snapshot requests on the feed's control channel."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.channel = control_channel(settings.price_channel)
        self.redis = client(settings.redis_url, settings.redis_timeout)
        self.backoff = Backoff(cap=settings.redis_retry_max)
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    def ask(self, asset: str) -> None:
        self._pending.add(asset)
        self._wake.set()

    async def run(self) -> None:
        """Publish requests as they come, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                asset = min(self._pending)
                try:
                    await self.redis.publish(self.channel, resync_request(asset))
                except REDIS_ERRORS as exc:
                    if self.backoff.attempts == 0:
                        logger.warning("books: cannot ask for a snapshot of %s (%s); retrying", asset,
                                    exc.__class__.__name__)
                    await asyncio.sleep(self.backoff.next_delay())
                    continue
                self.backoff.reset()
                self._pending.discard(asset)
                logger.info("books: asked the feed for a snapshot of %s", asset)

    async def aclose(self) -> None:
        await self.redis.aclose()
