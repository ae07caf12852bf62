"""`realtime feed`: publish simulated prices to the Redis price channel.

Stands in for the platform's price poller: the same JSON message, with `seq`
and `ts`, so every gateway pod agrees on the numbering. Survives Redis
restarts (reconnects with backoff; ticks due while Redis is away are skipped,
not queued: only the newest price matters).

With `per_asset` (`realtime feed --per-asset`) each asset goes to its own
channel `<price channel>:<ASSET>`; on a Redis Cluster with SPUBLISH, so each
tick is handled by the one shard that owns its channel.

Each tick comes with a move of the asset's order book around it
(`feed.bookwalk`, `book_levels` levels a side; 0 = no books), on the same
channel, after a snapshot at start. A gateway whose book broke asks for a
snapshot on `<price channel>:control` (`{"type": "book:resync", "asset"}`);
the feed answers at once with one, at most one per asset per `RESYNC_QUIET`.

`run_exchange_feed` publishes an exchange's normalised streams instead
(`realtime feed --source binance`, `feed.exchange`), and answers resync
requests with the adapter's local book.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from realtime.backplane.connections import REDIS_ERRORS, Backoff, Client, Subscription, client
from realtime.backplane.shards import is_cluster
from realtime.config import Settings
from realtime.feed.bookwalk import BookWalk
from realtime.feed.simulator import RandomWalk
from realtime.protocol import BOOK_RESYNC
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# Seconds within which one asset's resync requests share one snapshot (every pod asks when the feed skips).
RESYNC_QUIET = 0.1


async def run_feed(settings: Settings, *, rate: float, count: int | None = None, per_asset: bool = False,
                   book_levels: int = 60) -> int:
    """Publish `rate` ticks (and book moves) per second per asset until cancelled or `count` ticks are out."""
    assert settings.redis_url is not None
    walk = RandomWalk(settings.catalog)
    redis = client(settings.redis_url, settings.redis_timeout)
    sharded = per_asset and is_cluster(settings.redis_url)
    one_by_one = is_cluster(settings.redis_url) and not per_asset
    channels = {asset.name: f"{settings.price_channel}:{asset.name}" if per_asset else settings.price_channel
                for asset in walk.assets}
    books = {asset.name: BookWalk(asset.name, asset.decimals, levels=book_levels)
             for asset in walk.assets} if book_levels > 0 else {}
    started: set[str] = set()  # assets whose book snapshot is out
    lock = asyncio.Lock()  # a snapshot and the moves around it go out in seq order
    answering = asyncio.create_task(_answer_resyncs(settings, redis,
                                                    lambda asset: books[asset].snapshot() if asset in books else None,
                                                    channels, lock,
                                                    sharded=sharded, one_by_one=one_by_one))
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
                messages: list[tuple[str, bytes]] = []
                async with lock:
                    for asset in walk.assets:
                        tick = walk.tick(asset)
                        messages.append((channels[asset.name], orjson.dumps(tick)))
                        book = books.get(asset.name)
                        if book is not None:
                            move = book.move(tick["bid"], tick["ask"])
                            message = move if asset.name in started else book.snapshot()
                            started.add(asset.name)
                            messages.append((channels[asset.name], orjson.dumps(message)))
                    await _publish(redis, messages, sharded=sharded, one_by_one=one_by_one)
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
        await cancel(answering)
        await redis.aclose()
    return published


async def run_exchange_feed(settings: Settings, *, source: str, symbols: dict[str, str], ws_url: str,
                            rest_url: str, trades: str = "trade", per_asset: bool = False,
                            metrics_port: int | None = None) -> None:
    """Publish an exchange's streams (`source` binance or okx) for `symbols` (exchange symbol -> asset)
    until cancelled."""
    from realtime.feed.exchange import Adapter, Binance, Counters, Okx, run_exchange

    assert settings.redis_url is not None
    redis = client(settings.redis_url, settings.redis_timeout)
    sharded = per_asset and is_cluster(settings.redis_url)
    one_by_one = is_cluster(settings.redis_url) and not per_asset
    channels = {asset: f"{settings.price_channel}:{asset}" if per_asset else settings.price_channel
                for asset in symbols.values()}
    lock = asyncio.Lock()

    async def publish(messages: list[tuple[str, bytes]]) -> None:
        async with lock:
            await _publish(redis, [(channels[asset], message) for asset, message in messages], sharded=sharded,
                           one_by_one=one_by_one)

    adapter: Adapter = (
        Binance(symbols, ws_url=ws_url, rest_url=rest_url, publish=publish, counters=Counters(), trades=trades)
        if source == "binance" else Okx(symbols, ws_url=ws_url, publish=publish, counters=Counters()))
    answering = asyncio.create_task(_answer_resyncs(settings, redis, adapter.answer, channels, asyncio.Lock(),
                                                    sharded=sharded, one_by_one=one_by_one))
    logger.info("feed: %s %s -> %s", source, ",".join(f"{s}={a}" for s, a in symbols.items()), settings.price_channel)
    try:
        await run_exchange(adapter, metrics_port=metrics_port)
    finally:
        await cancel(answering)
        await redis.aclose()


async def _answer_resyncs(settings: Settings, redis: Client, snapshot: Callable[[str], dict[str, Any] | None],
                          channels: dict[str, str], lock: asyncio.Lock, *, sharded: bool, one_by_one: bool) -> None:
    """Answer gateways' `book:resync` requests with `snapshot(asset)` (None: no book to give), until cancelled."""
    assert settings.redis_url is not None
    control = Subscription("feed control", settings.redis_url, [f"{settings.price_channel}:control"],
                           timeout=settings.redis_timeout, retry_max=settings.redis_retry_max)
    loop = asyncio.get_running_loop()
    answered: dict[str, float] = {}
    async for message in control.messages():
        asset = _resync_asset(message["data"])
        if asset is None or asset not in channels or loop.time() - answered.get(asset, float("-inf")) < RESYNC_QUIET:
            continue
        book = snapshot(asset)
        if book is None:
            continue
        answered[asset] = loop.time()
        try:
            async with lock:
                await _publish(redis, [(channels[asset], orjson.dumps(book))], sharded=sharded, one_by_one=one_by_one)
            logger.info("feed: answered a resync request for %s with a snapshot at seq %s", asset, book.get("seq"))
        except REDIS_ERRORS as exc:
            logger.warning("feed: could not answer a resync request for %s (%s)", asset, exc.__class__.__name__)


def _resync_asset(raw: Any) -> str | None:
    """The asset of a `{"type": "book:resync", "asset"}` request; None for anything else."""
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or request.get("type") != BOOK_RESYNC or not isinstance(request.get("asset"), str):
        return None
    asset: str = request["asset"]
    return asset


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
