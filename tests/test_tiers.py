"""Issue 14, delayed-data tiers: a `delay` claim, `REALTIME_DELAY_TIERS`, conflation, refusals.

A real gateway on real Redis; a real-time and a delayed python-socketio client
on the same pod. Ages are checked against the ticks' own `ts` (a lower bound,
never a "took less than" timing).
"""

from __future__ import annotations

import time
from typing import Any

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connect_error,
    connected,
    eventually,
    free_port,
    http_json,
    sample,
    scrape,
    ticking,
    token,
)

BTC, ETH = "BTC_USDC_PERP", "ETH_USDC_PERP"
DELAY = 3


async def start(start_gateway: InProcessFactory, redis: RedisServer, **settings: Any) -> InProcessGateway:
    suffix = str(free_port())
    return await start_gateway(redis_url=redis.url, price_channel=f"prices-{suffix}",
                               manager_channel=f"socketio-{suffix}", **settings)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def every_10th_of_a_second(n: int) -> list[dict[str, Any]]:
    """BTC and ETH ticks stamped with their publish time."""
    ts = now_ms()
    return [{"asset": asset, "bid": 1000 + n, "ask": 1001 + n, "seq": n, "ts": ts} for asset in (BTC, ETH)]


async def test_a_delayed_client_never_gets_a_tick_younger_than_its_delay(start_gateway: InProcessFactory,
                                                                        redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server, delay_tiers="0,3")
    arrivals: list[tuple[int, dict[str, Any]]] = []
    async with connected(gateway.url, auth={"token": token("realtime")}) as live, \
            connected(gateway.url, auth={"token": token("delayed", delay=DELAY)}) as late:
        late.client.on("price:update", lambda update: arrivals.append((now_ms(), update)))
        await live.call("price:subscribe", [BTC, ETH])
        first = await late.call("price:subscribe", [BTC, ETH])
        assert first["prices"] == []  # nothing is 3 s old yet
        async with ticking(gateway, every_10th_of_a_second, 0.1):
            await eventually(lambda: len(arrivals) >= 8, timeout=20)
            ack = await late.call("price:subscribe", [BTC])
        seen_live = {(u["asset"], u["seq"]) for u in live.received("price:update")}

    # Every delayed tick is at least 3 s old by its own ts, and the real-time client had it already.
    for received, update in arrivals:
        assert received - update["ts"] >= DELAY * 1000, (received, update)
        assert (update["asset"], update["seq"]) in seen_live
    # Conflated: at most one tick per asset per second, and each is the newest of its second.
    for asset in (BTC, ETH):
        seqs = [u["seq"] for _, u in arrivals if u["asset"] == asset]
        assert seqs == sorted(set(seqs))
        times = [received for received, u in arrivals if u["asset"] == asset]
        assert len(times) <= (times[-1] - times[0]) / 1000 + 1.5  # one release per whole second
    assert len([u for _, u in arrivals if u["asset"] == BTC]) < len([u for u in seen_live if u[0] == BTC]) / 3
    # The ack's snapshot for a delayed client is a tick at least 3 s old too.
    snapshot = ack["prices"][0]
    assert snapshot["asset"] == BTC and now_ms() - snapshot["ts"] >= DELAY * 1000


async def test_the_http_api_answers_a_delayed_token_with_delayed_prices(start_gateway: InProcessFactory,
                                                                       redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server, delay_tiers="0,3")
    delayed = {"Authorization": f"Bearer {token('late', delay=DELAY)}"}
    async with ticking(gateway, every_10th_of_a_second, 0.2):
        async def released() -> bool:
            _, body = await http_json(gateway.url + "/api/v1/assets", headers=delayed)
            return body["assets"][0]["price"] is not None

        await eventually(released, timeout=15)
        _, late = await http_json(gateway.url + "/api/v1/assets", headers=delayed)
        _, live = await http_json(gateway.url + "/api/v1/assets",
                                  headers={"Authorization": f"Bearer {token('live')}"})
    assert now_ms() - late["assets"][0]["price"]["ts"] >= DELAY * 1000
    assert live["assets"][0]["price"]["seq"] > late["assets"][0]["price"]["seq"]
    # The history's memory is reported per tier and asset.
    samples = await scrape(gateway.url)
    assert sample(samples, "realtime_delayed_history_bytes", delay="3", asset=BTC) == (DELAY + 2) * 40
    assert 1 <= sample(samples, "realtime_delayed_history_ticks", delay="3", asset=BTC) <= DELAY + 2


async def test_a_delay_the_gateway_does_not_offer_is_refused_at_connect(start_gateway: InProcessFactory,
                                                                       redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server, delay_tiers="0,3")
    refused = await connect_error(gateway.url, auth={"token": token("mallory", delay=5)})
    assert refused == {"code": "AUTH_INVALID",
                       "message": "the token asks for a 5 s delay; this gateway offers delays (s) of 0, 3"}
    refused = await connect_error(gateway.url, auth={"token": token("mallory", delay=-1)})
    assert refused["code"] == "AUTH_INVALID" and "delay" in refused["message"]
    # A delayed connection may not refresh into another tier.
    async with connected(gateway.url, auth={"token": token("dave", delay=DELAY)}) as client:
        ack = await client.call("auth:refresh", {"token": token("dave")})
        assert ack["ok"] is False and ack["error"]["code"] == "FORBIDDEN"
