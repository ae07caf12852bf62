"""The bench's price publisher: ticks through Redis at a set rate, stamped with their publish time.

`seq` carries the publish time in µs (the workers subtract it from their
receive time: one clock for both ends) and `ts` the same in ms, as the feed
contract wants. `seq` must be strictly increasing per asset, so two ticks in
the same microsecond get consecutive numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson

from realtime.backplane.connections import client
from realtime.backplane.shards import is_cluster


class Ticker:
    """Publishes round-robin over `assets` on `channel` (or on each asset's own channel)."""

    def __init__(self, redis_url: str, channel: str, assets: list[str], *, per_asset: bool = False) -> None:
        # On a Redis Cluster per-asset channels are sharded: SPUBLISH (and a cluster pipelines nothing else).
        self.client = client(redis_url, 10.0)
        self.sharded = is_cluster(redis_url)
        if self.sharded and not per_asset:
            raise ValueError("on a Redis Cluster the bench publishes per-asset channels only")
        self.channel = channel
        self.assets = assets
        # Per-asset channels (`<channel>:<ASSET>`, REALTIME_PRICE_CHANNELS=per-asset) or the one channel.
        self.channels = {asset: f"{channel}:{asset}" if per_asset else channel for asset in assets}
        self._last_us = 0
        self._next = 0

    async def close(self) -> None:
        await self.client.aclose()

    def _tick(self) -> tuple[str, bytes]:
        asset = self.assets[self._next % len(self.assets)]
        self._next += 1
        now_us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = now_us
        bid = 1_000_000 + now_us % 1000
        return asset, orjson.dumps({"asset": asset, "bid": bid, "ask": bid + 10, "seq": now_us, "ts": now_us // 1000})

    async def prime(self) -> None:
        """One tick of every asset, so each has a latest price (a recovered client is sent it)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for _ in self.assets:
                asset, message = self._tick()
                if self.sharded:
                    pipe.spublish(self.channels[asset], message)
                else:
                    pipe.publish(self.channels[asset], message)
            await pipe.execute()

    async def run(self, ticks_per_second: float, duration: float) -> Counter[str]:
        """Publish evenly for `duration` seconds; return how many ticks went out per asset."""
        published: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        total = int(ticks_per_second * duration)
        while sent < total:
            due = min(total, int((loop.time() - started) * ticks_per_second) + 1)
            if due > sent:
                async with self.client.pipeline(transaction=False) as pipe:
                    for _ in range(due - sent):
                        asset, message = self._tick()
                        if self.sharded:
                            pipe.spublish(self.channels[asset], message)
                        else:
                            pipe.publish(self.channels[asset], message)
                        published[asset] += 1
                    await pipe.execute()
                sent = due
            # Sleep to the next tick; at high rates ticks that fell due meanwhile go out in one pipeline.
            await asyncio.sleep(max(0.0005, started + sent / ticks_per_second - loop.time()))
        return published
