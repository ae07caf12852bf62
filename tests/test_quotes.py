"""Issue 14, quote integrity: the price band and exchange-style decimal strings, through real Redis."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connected,
    eventually,
    feed,
    free_port,
    sample,
    scrape,
    token,
)

BTC, SOL = "BTC_USDC_PERP", "SOL_USDC_PERP"


async def start(start_gateway: InProcessFactory, redis: RedisServer, **settings: Any) -> InProcessGateway:
    suffix = str(free_port())
    return await start_gateway(redis_url=redis.url, price_channel=f"prices-{suffix}",
                               manager_channel=f"socketio-{suffix}", **settings)


def quote(bid: int, seq: int) -> dict[str, Any]:
    return {"asset": BTC, "bid": bid, "ask": bid + 2, "seq": seq}


async def test_a_spike_is_held_and_dropped(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server, price_band=0.1)
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        # 1000 -> 2000 (+100 %) is held; 1010 is not within 10 % of it: the spike is dropped, 1010 flows.
        await feed(gateway, quote(1000, 1), quote(2000, 2), quote(1010, 3), quote(1020, 4))
        await client.wait_for("price:update", 3)
        assert [(u["bid"], u["seq"]) for u in client.received("price:update")] == [(1000, 1), (1010, 3), (1020, 4)]
        ack = await client.call("price:subscribe", [BTC])
        assert ack["prices"][0]["bid"] == 1020
    await eventually(lambda: _band_counted(gateway))
    assert re.search(r"dropped band tick: BTC_USDC_PERP: bid 2000 ask 2002 seq 2 was not confirmed", gateway.logs())


async def test_a_spike_confirmed_is_accepted_in_order(start_gateway: InProcessFactory,
                                                      redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server, price_band=0.1)
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(1000, 1), quote(1500, 2))
        await client.wait_for("price:update", 1)
        ack = await client.call("price:subscribe", [BTC])
        assert ack["prices"][0]["bid"] == 1000  # held back: nobody sees 1500 yet
        await feed(gateway, quote(1520, 3), quote(1530, 4))
        await client.wait_for("price:update", 4)
        assert [(u["bid"], u["seq"]) for u in client.received("price:update")] == \
            [(1000, 1), (1500, 2), (1520, 3), (1530, 4)]
    assert sample(await scrape(gateway.url), "realtime_feed_messages_total", outcome="band") == 0


async def test_decimal_string_prices_are_exact_to_the_last_digit(gateway: InProcessGateway) -> None:
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC, SOL])
        await feed(gateway,
                   {"asset": BTC, "bid": "95850.1234", "ask": "95851"},
                   {"asset": SOL, "bid": "239.991", "ask": "240.00"},  # 3 decimals: SOL has 2, refused
                   {"asset": BTC, "bid": "90071992547.4091", "ask": "90071992547.4099"},
                   {"asset": SOL, "bid": "239.99", "ask": "240.0"})
        updates = await client.wait_for("price:update", 3)
    assert [(u["asset"], u["bid"], u["ask"]) for u in updates] == [
        (BTC, 958_501_234, 958_510_000), (BTC, 900_719_925_474_091, 900_719_925_474_099), (SOL, 23_999, 24_000)]
    assert "SOL_USDC_PERP: bid '239.991' has more than the asset's 2 decimals" in gateway.logs()


async def _band_counted(gateway: InProcessGateway) -> bool:
    return sample(await scrape(gateway.url), "realtime_feed_messages_total", outcome="band") == 1


async def test_an_out_of_order_ts_is_dropped_as_stale(gateway: InProcessGateway) -> None:
    now = time.time_ns() // 1_000_000
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(100, 1) | {"ts": now}, quote(101, 2) | {"ts": now - 500},  # within 1 s: kept
                   quote(102, 3) | {"ts": now - 5000},  # older than the last by 5 s: stale
                   quote(103, 4) | {"ts": now + 1})
        await client.wait_for("price:update", 3)
    assert [u["bid"] for u in client.received("price:update")] == [100, 101, 103]
    assert sample(await scrape(gateway.url), "realtime_feed_messages_total", outcome="stale") == 1
