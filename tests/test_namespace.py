"""REALTIME_NAMESPACE: one knob names every Redis key and channel the gateway owns (docs/redis.md)."""

from __future__ import annotations

import redis.asyncio as aioredis

from realtime.config import load_settings
from realtime.namespace import namespace
from tests.support import (
    BTC,
    InProcessFactory,
    RedisServer,
    connected,
    eventually,
    feed,
    http_json,
    token,
)

SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


def test_without_a_namespace_the_names_are_the_older_knobs() -> None:
    names = namespace(load_settings({"manager_channel": "mc", "price_channel": "pc", "demand_key": "dk"}))
    assert (names.state, names.manager_channel, names.restarts, names.demand, names.presence) == (
        "mc", "mc", "pc:seq-offsets", "dk", "{mc:presence}:")
    defaults = namespace(load_settings())
    assert (defaults.state, defaults.manager_channel, defaults.demand) == ("socketio", "socketio", "realtime:demand")


def test_a_namespace_prefixes_every_name_and_explicit_older_knobs_still_win() -> None:
    names = namespace(load_settings({"namespace": "blue", "price_channel": "pc"}))
    assert (names.state, names.manager_channel, names.restarts, names.demand, names.presence) == (
        "blue", "blue:socketio", "blue:seq-offsets", "blue:demand", "{blue:presence}:")
    chosen = namespace(load_settings({"namespace": "blue", "manager_channel": "mc", "demand_key": "dk"}))
    assert (chosen.state, chosen.manager_channel, chosen.demand) == ("blue", "mc", "dk")


async def test_a_gateway_writes_only_under_its_namespace(start_gateway: InProcessFactory, own_redis: RedisServer
                                                         ) -> None:
    gateway = await start_gateway(redis_url=own_redis.url, namespace="blue", price_channel="prices",
                                  max_connections_per_user=5, demand_interval=0.2)
    redis = aioredis.Redis.from_url(own_redis.url)
    try:
        async with connected(gateway.url, auth={"token": token("alice")}) as alice:
            await alice.call("price:subscribe", [BTC])
            status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE,
                                           json={"event": "order:update", "user": "alice", "data": {"n": 1}})
            assert status == 202, body
            await alice.wait_for("order:update")
            # A publisher restart that two ticks confirmed: its offset is shared through Redis.
            await feed(gateway, *[{"asset": BTC, "bid": 1, "ask": 2, "seq": seq, "ts": ts}
                                  for seq, ts in ((5, 1000), (6, 1001), (1, 2000))])
            await alice.wait_for("price:update", 3)

            async def owned() -> set[bytes]:
                return {key async for key in redis.scan_iter()} - {b"realtime:events"}  # the events stream: input

            expected = {b"{blue}:log", b"{blue}:room:user:alice", b"{blue}:router", b"blue:seq-offsets",
                        b"blue:demand"}
            keys: set[bytes] = set()

            async def written() -> bool:
                keys.update(await owned())
                return expected <= keys and any(key.startswith(b"blue:session:") for key in keys) and any(
                    key.startswith(b"{blue:presence}:") for key in keys)

            await eventually(written)
            outside = sorted(key for key in keys if not key.startswith((b"blue:", b"{blue}:", b"{blue:")))
            assert not outside, outside
            channels = await redis.pubsub_channels()
            assert b"blue:socketio" in channels or b"blue:socketio" in await redis.execute_command(
                "PUBSUB", "SHARDCHANNELS")
    finally:
        await redis.aclose()
