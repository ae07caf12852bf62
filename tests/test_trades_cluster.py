"""Trades and candles on a Redis Cluster: each asset's feed rides its own sharded channel, its history
and closed bars one slot (a hash tag per asset); two pods and a late third answer the same."""

from __future__ import annotations

import json
from typing import Any

from realtime.backplane.connections import client as redis_client
from tests.support import BTC, GatewayFactory, free_port
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster
from tests.support.trades import acks, bars, client, event_of, next_second, of_type, on_every_pod, read_until, trade

__all__ = ["redis_cluster"]  # fixtures


async def test_trades_and_candles_on_a_redis_cluster(redis_cluster: RedisClusterNodes,
                                                     start_gateway: GatewayFactory) -> None:
    suffix = str(free_port())
    settings: dict[str, Any] = {"redis_url": redis_cluster.url, "price_channel": f"prices-{suffix}",
                                "price_channels": "per-asset", "manager_channel": f"socketio-{suffix}"}
    pods = [await start_gateway(instance_id=f"pod{i}-{suffix}", **settings) for i in range(2)]
    urls = [pod.url for pod in pods]

    async def send(*messages: dict[str, Any]) -> None:
        redis = redis_client(redis_cluster.url, 2.0)
        try:
            for message in messages:
                await redis.spublish(f"prices-{suffix}:{message['asset']}", json.dumps(message))
        finally:
            await redis.aclose()

    calls = [["trades:subscribe", {"asset": BTC, "history": 5}],
             ["candles:subscribe", {"asset": BTC, "interval": "1s", "history": 10}]]
    async with client(urls[0], calls) as one, client(urls[1], calls) as two:  # the pods now hear BTC's channel
        base = next_second()
        trades = [trade(n, base + n * 300) for n in range(8)]  # bars at base, +1 s, +2 s (open)
        await on_every_pod(urls, "realtime_price_channels_held", 1, layout="per-asset",
                           channel=f"prices-{suffix}:{BTC}")
        for item in trades:
            await send(item)
        for session in (one, two):
            await read_until(session, lambda s=session: len(of_type(s, "trade")) == 8)
            assert of_type(session, "trade") == [event_of(m) for m in trades]
        await on_every_pod(urls, "realtime_candles_closed_total", 2, interval="1s")
    expected = bars(trades, 1_000, "1s")
    late = await start_gateway(instance_id=f"late-{suffix}", **settings)
    for url in [*urls, late.url]:
        async with client(url, calls) as session:
            trades_ack, candles_ack = acks(session)
            assert trades_ack["trades"] == [event_of(m) for m in trades[-5:]]
            assert [c for c in candles_ack["candles"] if c["closed"]] == expected[:2]
