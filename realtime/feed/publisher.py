"""`realtime feed`: publish simulated prices to the Redis price channel.

Stands in for the platform's price poller: the same JSON message, with `seq`
and `ts`, so every gateway pod agrees on the numbering. Survives Redis
restarts (reconnects with backoff; ticks due while Redis is away are skipped,
not queued: only the newest price matters).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from realtime.cluster.redis import REDIS_ERRORS, Backoff, client
from realtime.config import Settings
from realtime.feed.simulator import RandomWalk

log = logging.getLogger(__name__)


async def run_feed(settings: Settings, *, rate: float, count: int | None = None) -> int:
    """Publish `rate` ticks per second per asset until cancelled or `count` ticks are out."""
    assert settings.redis_url is not None
    walk = RandomWalk(settings.catalog)
    redis = client(settings.redis_url, settings.redis_timeout)
    backoff = Backoff(cap=settings.redis_retry_max)
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate if rate > 0 else 0.0
    published = 0
    log.info("feed: %s ticks/s for %d assets on %s", rate, len(walk.assets), settings.price_channel)
    try:
        deadline = loop.time()
        while count is None or published < count:
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for asset in walk.assets:
                        pipe.publish(settings.price_channel, orjson.dumps(walk.tick(asset)))
                    await pipe.execute()
                published += len(walk.assets)
                if backoff.attempts:
                    log.info("feed: Redis is back")
                backoff.reset()
            except REDIS_ERRORS as exc:
                if backoff.attempts == 0:
                    log.warning("feed: Redis unavailable (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(backoff.next_delay())
                deadline = loop.time()
                continue
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
    finally:
        await redis.aclose()
    return published
