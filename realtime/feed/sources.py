"""Price sources: where raw feed messages come from, chosen by URL.

A source is an async iterator of raw messages (JSON bytes) plus a `connected`
flag for readiness. `redis://` subscribes to the price channel and reconnects
on its own; `memory://` (embedded mode) runs the random-walk simulator in
process and feeds its ticks through the same validation as Redis would.

`REALTIME_PRICE_CHANNELS` says where a pod listens for ticks: `single` (the price
channel), `per-asset` (`<channel>:<ASSET>`, so a pod hears only the assets
its clients watch) or `both`, the default: the pod hears the single channel
and the per-asset ones of its assets, so it hears a feed of either layout
(and one moving from one to the other) without being told which; a tick that
comes twice is dropped as stale by its seq. Per-asset channels are followed with
`watch`/`unwatch`: a pod subscribes when an asset gets its first local
subscriber and lets go `REALTIME_PRICE_LINGER` seconds after the last one
left, so a client toggling a subscription costs Redis nothing. On a Redis
Cluster they are sharded channels (SSUBSCRIBE, each on its own shard).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import orjson

from realtime.backplane.connections import Subscription
from realtime.config import Settings
from realtime.feed.bookwalk import BookWalk
from realtime.feed.simulator import RandomWalk
from realtime.metrics import RedisLink


class PriceSource(Protocol):
    @property
    def connected(self) -> bool:
        """Whether ticks can arrive now (for /ready)."""

    def links(self) -> list[RedisLink]:
        """Its Redis connections, for /metrics."""

    def channels(self) -> list[tuple[str, str]]:
        """(layout, channel) of every price channel held now, for /metrics and /health."""

    def watch(self, asset: str) -> None:
        """`asset` has its first subscriber on this pod."""

    def unwatch(self, asset: str) -> None:
        """`asset`'s last subscriber on this pod left."""

    def messages(self) -> AsyncGenerator[bytes, None]: ...


# Price levels a side of each simulated book: deeper than the deepest usual view (REALTIME_BOOK_DEPTHS),
# so random deletions rarely leave it short.
BOOK_LEVELS = 60


class SimulatedSource:
    """Embedded mode: `rate` ticks per second per asset from a random walk, each with a book move around it.

    Books start with a snapshot; `ask(asset)` (a book that needs one) gets another at the next tick.
    """

    def __init__(self, settings: Settings) -> None:
        self.walk = RandomWalk(settings.catalog)
        self.rate = settings.simulated_rate
        self.books = {asset.name: BookWalk(asset.name, asset.decimals, levels=BOOK_LEVELS)
                      for asset in self.walk.assets}
        self._asked: set[str] = set()

    def ask(self, asset: str) -> None:
        self._asked.add(asset)

    @property
    def connected(self) -> bool:
        return True

    def links(self) -> list[RedisLink]:
        return []

    def channels(self) -> list[tuple[str, str]]:
        return []

    def watch(self, asset: str) -> None:
        return None  # the simulator ticks every asset anyway

    def unwatch(self, asset: str) -> None:
        return None

    async def messages(self) -> AsyncGenerator[bytes, None]:
        if self.rate <= 0:
            await asyncio.Event().wait()  # simulation off: a source that never ticks
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        first = True
        while True:
            for asset in self.walk.assets:
                tick = self.walk.tick(asset)
                yield orjson.dumps(tick)
                book = self.books[asset.name]
                move = book.move(tick["bid"], tick["ask"])
                if first or asset.name in self._asked:
                    self._asked.discard(asset.name)
                    yield orjson.dumps(book.snapshot())
                else:
                    yield orjson.dumps(move)
            first = False
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))


class RedisSource:
    """Subscribes to the price channel(s); reconnects with jittered backoff, forever.

    `forget` is called with an asset whose channel this pod let go: its
    latest price goes stale from then on and must not be a snapshot.
    """

    def __init__(self, settings: Settings, forget: Callable[[str], None] = lambda asset: None) -> None:
        assert settings.redis_url is not None
        single = [settings.price_channel] if settings.price_channels in ("single", "both") else []
        self.per_asset = settings.price_channels in ("per-asset", "both")
        # Whether the single channel carries every asset: once it has carried a tick (a feed uses one layout).
        self.hears_all = settings.price_channels == "single"
        self.channel = settings.price_channel
        self._single = settings.price_channel.encode() if single else None
        self.linger = settings.price_linger
        self.forget = forget
        self.subscription = Subscription("price feed", settings.redis_url, single,
                                         timeout=settings.redis_timeout, retry_max=settings.redis_retry_max)
        # Assets whose channel this pod holds, with the pending release of those nobody watches now.
        self._held: dict[str, asyncio.TimerHandle | None] = {}

    @property
    def connected(self) -> bool:
        return self.subscription.connected

    def links(self) -> list[RedisLink]:
        return [RedisLink("feed", lambda: self.subscription.connected, lambda: self.subscription.reconnects)]

    def channels(self) -> list[tuple[str, str]]:
        return [("single" if name == self.channel else "per-asset", name) for name in self.subscription.held]

    def watch(self, asset: str) -> None:
        if not self.per_asset:
            return
        if asset in self._held:
            release = self._held[asset]
            if release is not None:
                release.cancel()  # back within the linger: the channel never went
            self._held[asset] = None
            return
        self._held[asset] = None
        self._apply()

    def unwatch(self, asset: str) -> None:
        if asset not in self._held:
            return
        if self.linger == 0:
            self._release(asset)
        else:
            self._held[asset] = asyncio.get_running_loop().call_later(self.linger, self._release, asset)

    def _release(self, asset: str) -> None:
        del self._held[asset]
        self._apply()
        if not self.hears_all:
            self.forget(asset)

    def _apply(self) -> None:
        self.subscription.want(f"{self.channel}:{asset}" for asset in self._held)

    async def messages(self) -> AsyncGenerator[bytes, None]:
        try:
            # Closed with this generator, not left to the garbage collector with its Redis connection.
            async with contextlib.aclosing(self.subscription.messages()) as messages:
                async for message in messages:
                    if not self.hears_all and message["channel"] == self._single:
                        self.hears_all = True
                    yield message["data"]
        finally:
            for release in self._held.values():
                if release is not None:
                    release.cancel()
