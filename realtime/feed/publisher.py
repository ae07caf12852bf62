"""`realtime feed`: publish simulated prices to the Redis price channel.

Stands in for the platform's price poller: the same JSON message, with `seq`
and `ts`, so every gateway pod agrees on the numbering. Survives Redis
restarts (reconnects with backoff; ticks due while Redis is away are skipped,
not queued: only the newest price matters).

With `per_asset` (`realtime feed --per-asset`) each asset goes to its own
channel `<price channel>:<ASSET>`; on a Redis Cluster with SPUBLISH, so each
tick is handled by the one shard that owns its channel.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from realtime.backplane.connections import REDIS_ERRORS, Backoff, Client, client
from realtime.backplane.shards import is_cluster
from realtime.config import Settings
from realtime.feed.simulator import RandomWalk

logger = logging.getLogger(__name__)


async def run_feed(settings: Settings, *, rate: float, count: int | None = None, per_asset: bool = False) -> int:
    """Publish `rate` ticks per second per asset until cancelled or `count` ticks are out."""
    assert settings.redis_url is not None
    walk = RandomWalk(settings.catalog)
    redis = client(settings.redis_url, settings.redis_timeout)
    sharded = per_asset and is_cluster(settings.redis_url)
    channels = {asset.name: f"{settings.price_channel}:{asset.name}" if per_asset else settings.price_channel
                for asset in walk.assets}
    backoff = Backoff(cap=settings.redis_retry_max)
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate if rate > 0 else 0.0
    published = 0
    logger.info("feed: %s ticks/s for %d assets on %s%s", rate, len(walk.assets), settings.price_channel,
             ":<ASSET>" if per_asset else "")
    try:
        deadline = loop.time()
        while count is None or published < count:
            try:
                await _publish(redis, [(channels[asset.name], orjson.dumps(walk.tick(asset))) for asset in walk.assets],
                               sharded=sharded, one_by_one=is_cluster(settings.redis_url) and not per_asset)
                published += len(walk.assets)
                if backoff.attempts:
                    logger.info("feed: Redis is back")
                backoff.reset()
            except REDIS_ERRORS as exc:
                if backoff.attempts == 0:
                    logger.warning("feed: Redis unavailable (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(backoff.next_delay())
                deadline = loop.time()
                continue
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
    finally:
        await redis.aclose()
    return published


async def _publish(redis: Client, messages: list[tuple[str, bytes]], *, sharded: bool, one_by_one: bool) -> None:
    if one_by_one:
        # A cluster refuses PUBLISH in a pipeline (per-asset channels are the cluster's way).
        for channel, message in messages:
            await redis.publish(channel, message)
        return
    async with redis.pipeline(transaction=False) as pipe:
        for channel, message in messages:
            if sharded:
                pipe.spublish(channel, message)
            else:
                pipe.publish(channel, message)
        await pipe.execute()
