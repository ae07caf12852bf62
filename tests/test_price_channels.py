"""Per-asset price channels on one Redis: a pod listens to what its clients watch, with a linger."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import redis.asyncio as aioredis

from tests.support import (
    ROOT,
    InProcessFactory,
    RedisServer,
    connected,
    eventually,
    free_port,
    http_json,
    publish,
    scrape,
    token,
)

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"
SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


async def numsub(redis_url: str, *channels: str) -> dict[str, int]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        reply = await redis.pubsub_numsub(*channels)
    finally:
        await redis.aclose()
    return {name.decode(): count for name, count in reply}


def tick(asset: str, seq: int) -> dict[str, Any]:
    return {"asset": asset, "bid": 100 + seq, "ask": 101 + seq, "seq": seq}


async def test_a_pod_listens_to_watched_assets_and_lets_go_after_the_linger(
        start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    channel = f"prices-{free_port()}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel, price_channels="per-asset",
                                  price_linger=1, manager_channel=f"socketio-{free_port()}")
    btc, eth, sol = (f"{channel}:{asset}" for asset in (BTC, ETH, SOL))
    # Nobody watches anything: no price channel at all, not even the single one.
    assert await numsub(redis_server.url, channel, btc, eth, sol) == {channel: 0, btc: 0, eth: 0, sol: 0}
    async with connected(gateway.url, auth={"token": token("alice")}) as alice, \
            connected(gateway.url, auth={"token": token("bob")}) as bob:
        await alice.call("price:subscribe", [BTC, ETH])
        await bob.call("price:subscribe", [BTC])

        async def listening() -> bool:
            return await numsub(redis_server.url, btc, eth, sol) == {btc: 1, eth: 1, sol: 0}
        await eventually(listening)
        await publish(redis_server.url, btc, *[tick(BTC, s) for s in range(1, 6)])
        await publish(redis_server.url, sol, *[tick(SOL, s) for s in range(1, 6)])
        await publish(redis_server.url, channel, tick(BTC, 99))  # the single channel: not listened to
        await bob.wait_for("price:update", 5)
        await asyncio.sleep(0.3)
        assert [u["seq"] for u in bob.received("price:update")] == [1, 2, 3, 4, 5]

        # A toggle within the linger keeps the channel: no unsubscribe, no resubscribe.
        await alice.call("price:unsubscribe", [ETH])
        await alice.call("price:subscribe", [ETH])
        await asyncio.sleep(1.5)  # past the linger the first unsubscribe would have ended
        assert await numsub(redis_server.url, eth) == {eth: 1}

        # The last BTC watcher leaves (one unsubscribes, one disconnects): BTC goes after the linger.
        await alice.call("price:unsubscribe", [BTC])
        await bob.client.disconnect()

        async def btc_released() -> bool:
            return await numsub(redis_server.url, btc, eth) == {btc: 0, eth: 1}
        await eventually(btc_released, timeout=5)
        # What the pod no longer hears is no snapshot: a new subscriber gets none rather than a stale price.
        ack = await alice.call("price:subscribe", [BTC])
        assert ack["prices"] == []
        await eventually(listening)
        before = len(alice.received("price:update"))
        await publish(redis_server.url, btc, tick(BTC, 6))
        await alice.wait_for("price:update", before + 1)
        assert alice.received("price:update")[-1]["seq"] == 6

        # The demand signal counts subscribers as before (alice: BTC and ETH).
        async def demand() -> bool:
            _, body = await http_json(gateway.url + "/api/v1/demand", headers=SERVICE)
            return bool(body["assets"] == {BTC: 1, ETH: 1, SOL: 0})
        await eventually(demand, timeout=10)


async def test_both_channels_deliver_each_tick_once(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    channel = f"prices-{free_port()}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel, price_channels="both",
                                  manager_channel=f"socketio-{free_port()}")
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [BTC])

        async def listening() -> bool:
            return await numsub(redis_server.url, channel, f"{channel}:{BTC}") == {channel: 1, f"{channel}:{BTC}": 1}
        await eventually(listening)
        # A feed moving to per-asset channels publishes each tick on both for a while.
        for seq in range(1, 11):
            await publish(redis_server.url, channel, tick(BTC, seq))
            await publish(redis_server.url, f"{channel}:{BTC}", tick(BTC, seq))
        await alice.wait_for("price:update", 10)
        await asyncio.sleep(0.3)
        assert [u["seq"] for u in alice.received("price:update")] == list(range(1, 11))


async def test_realtime_feed_per_asset(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    channel = f"prices-{free_port()}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel, price_channels="per-asset",
                                  manager_channel=f"socketio-{free_port()}")
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [ETH])

        async def listening() -> bool:
            return await numsub(redis_server.url, f"{channel}:{ETH}") == {f"{channel}:{ETH}": 1}
        await eventually(listening)
        feed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", "feed", "--per-asset", "--rate", "20", "--count", "30",
            "--redis-url", redis_server.url, "--price-channel", channel, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, stderr = await asyncio.wait_for(feed.communicate(), 30)
        assert feed.returncode == 0, stderr.decode()
        updates = await alice.wait_for("price:update", 10, timeout=10)
        assert {u["asset"] for u in updates} == {ETH}
        assert [u["seq"] for u in updates] == sorted({u["seq"] for u in updates})


async def channels_held(gateway_url: str) -> tuple[list[str], dict[str, str]]:
    """What /health and /metrics say the pod listens to: (channels, {channel: layout})."""
    _, health = await http_json(gateway_url + "/health")
    metrics = await scrape(gateway_url)
    held = {dict(labels)["channel"]: dict(labels)["layout"] for (name, labels), value in metrics.items()
            if name == "realtime_price_channels_held" and value == 1}
    return health["price_channels"], held


async def test_by_default_a_pod_hears_a_feed_of_either_layout(start_gateway: InProcessFactory,
                                                              redis_server: RedisServer) -> None:
    # Issue #18, finding 9: no REALTIME_PRICE_CHANNELS set, and ticks arrive whichever layout the feed uses.
    channel = f"prices-{free_port()}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel,
                                  manager_channel=f"socketio-{free_port()}")
    btc = f"{channel}:{BTC}"
    assert (await channels_held(gateway.url)) == ([channel], {channel: "single"})
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [BTC])

        async def listening() -> bool:
            return await numsub(redis_server.url, channel, btc) == {channel: 1, btc: 1}
        await eventually(listening)
        assert (await channels_held(gateway.url)) == ([channel, btc], {channel: "single", btc: "per-asset"})
        await publish(redis_server.url, channel, *[tick(BTC, s) for s in (1, 2, 3)])  # a single-channel feed
        await alice.wait_for("price:update", 3)
        await publish(redis_server.url, btc, *[tick(BTC, s) for s in (4, 5, 6)])  # a per-asset feed
        await alice.wait_for("price:update", 6)
        for seq in (7, 8, 9):  # a feed on both: each tick once
            await publish(redis_server.url, channel, tick(BTC, seq))
            await publish(redis_server.url, btc, tick(BTC, seq))
        await alice.wait_for("price:update", 9)
        await asyncio.sleep(0.3)
        assert [u["seq"] for u in alice.received("price:update")] == list(range(1, 10))


async def test_by_default_an_asset_heard_per_asset_only_is_forgotten_when_let_go(
        start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    # With a per-asset feed, the single channel carries nothing: letting an asset go makes its price unknown here.
    channel = f"prices-{free_port()}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel, price_linger=0,
                                  manager_channel=f"socketio-{free_port()}")
    btc = f"{channel}:{BTC}"
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [BTC])
        async def listening() -> bool:
            return await numsub(redis_server.url, btc) == {btc: 1}
        await eventually(listening)
        await publish(redis_server.url, btc, tick(BTC, 1))
        await alice.wait_for("price:update", 1)
        await alice.call("price:unsubscribe", [BTC])

        async def released() -> bool:
            return await numsub(redis_server.url, btc) == {btc: 0}
        await eventually(released)
        assert (await alice.call("price:subscribe", [BTC]))["prices"] == []
