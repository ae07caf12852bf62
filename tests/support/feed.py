"""What a gateway hears through Redis: price ticks on the feed channel, back ends' private emits."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
import socketio

from realtime.backplane.connections import client as redis_client
from realtime.waits import cancel
from tests.support.gateway import Gateway

BTC, ETH = "BTC_USDC_PERP", "ETH_USDC_PERP"


async def publish(redis_url: str, channel: str, *messages: Any) -> None:
    """Publish feed messages (dicts become JSON; str/bytes go as they are), on one Redis or a cluster."""
    client = redis_client(redis_url, 5.0)
    try:
        for message in messages:
            raw = message if isinstance(message, (str, bytes)) else json.dumps(message)
            await client.publish(channel, raw)
    finally:
        await client.aclose()


async def feed(gateway: Gateway, *messages: Any) -> None:
    """Publish `messages` on `gateway`'s price channel, as the upstream feed does."""
    await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"], *messages)


async def publish_ticks(gateway: Gateway, assets: list[str], count: int, *, every: float = 0.0,
                        burst: int = 1) -> None:
    """Publish `count` ticks per asset with seq 1..count, `burst` at a time, every `every` s."""
    client = aioredis.Redis.from_url(gateway.env["REALTIME_REDIS_URL"])
    channel = gateway.env["REALTIME_PRICE_CHANNEL"]
    try:
        for start in range(1, count + 1, burst):
            async with client.pipeline(transaction=False) as pipe:
                for seq in range(start, min(start + burst, count + 1)):
                    for asset in assets:
                        pipe.publish(channel, f'{{"asset":"{asset}","bid":{seq},"ask":{seq + 1},"seq":{seq}}}')
                await pipe.execute()
            # Pacing the feed (a rate is the scenario), not a wait for something.
            await asyncio.sleep(every)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def ticking(gateway: Gateway, batch: Callable[[int], list[dict[str, Any]]], interval: float
                  ) -> AsyncIterator[None]:
    """While the block runs, publish `batch(n)` to the gateway's feed for n = 1, 2, ... every `interval` s."""
    async def run() -> None:
        n = 0
        while True:
            n += 1
            await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"], *batch(n))
            # Pacing the ticker, not a wait for something.
            await asyncio.sleep(interval)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        await cancel(task)


def seqs(updates: list[Any], asset: str = BTC) -> list[int]:
    """The seqs of `asset`'s price updates, in the order received."""
    return [update["seq"] for update in updates if update["asset"] == asset]


async def emitter(redis_url: str, channel: str) -> Any:
    """A back end's write-only python-socketio manager on the gateway's manager channel."""
    return socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)


@contextlib.asynccontextmanager
async def backend(gateway: Gateway) -> AsyncIterator[Any]:
    """A back end's write-only manager on `gateway`'s manager channel, closed when the block ends."""
    manager = await emitter(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_MANAGER_CHANNEL"])
    try:
        yield manager
    finally:
        if getattr(manager, "redis", None) is not None:
            await manager.redis.aclose()


async def backend_emit(redis_url: str, channel: str, event: str, data: Any, room: str) -> None:
    """Emit as a back-end service does: python-socketio's own write-only Redis manager."""
    manager = socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)
    try:
        await manager.emit(event, data, room=room)
    finally:
        if manager.redis is not None:
            await manager.redis.aclose()
