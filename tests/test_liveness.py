"""Issue 14, liveness: `price:status` live / stale / halted, in the ack, the HTTP API and /metrics.

A real gateway on real Redis, real python-socketio clients.
"""

from __future__ import annotations

from typing import Any

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connected,
    eventually,
    feed,
    free_port,
    http_json,
    sample,
    scrape,
    token,
)

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"


def tick(asset: str = BTC, bid: int = 100, ask: int = 101, **extra: Any) -> dict[str, Any]:
    return {"asset": asset, "bid": bid, "ask": ask, **extra}


async def start(start_gateway: InProcessFactory, redis: RedisServer, **settings: Any) -> InProcessGateway:
    suffix = str(free_port())
    return await start_gateway(redis_url=redis.url, price_channel=f"prices-{suffix}",
                               manager_channel=f"socketio-{suffix}", **settings)


def bearer(jwt: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt}"}


async def test_an_asset_goes_stale_and_live_again(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    # BTC goes stale after 1 s (REALTIME_STALE_AFTER), ETH after 30 s (its catalog override).
    gateway = await start(start_gateway, redis_server, stale_after=1,
                    assets="BTC_USDC_PERP:4,ETH_USDC_PERP:4:30,SOL_USDC_PERP:2")
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        ack = await client.call("price:subscribe", [BTC, ETH])
        assert [(s["asset"], s["status"]) for s in ack["statuses"]] == [(BTC, "stale"), (ETH, "stale")]
        await feed(gateway, tick(BTC, seq=1), tick(ETH, seq=1))
        await client.wait_for("price:update", 2)
        live = await client.wait_for("price:status", 2)
        assert {(s["asset"], s["status"]) for s in live} == {(BTC, "live"), (ETH, "live")}
        # Status first, then the tick that made the asset live.
        names = [(name, data["asset"]) for name, data in client.events if name.startswith("price:")]
        assert names.index(("price:status", BTC)) < names.index(("price:update", BTC))

        stale = (await client.wait_for("price:status", 3, timeout=10))[-1]
        assert stale["asset"] == BTC and stale["status"] == "stale" and stale["since"] > live[0]["since"]
        ack = await client.call("price:subscribe", [BTC, ETH])
        assert [(s["asset"], s["status"]) for s in ack["statuses"]] == [(BTC, "stale"), (ETH, "live")]
        assert ack["prices"][0]["seq"] == 1  # the last price stays, flagged stale

        await feed(gateway, tick(BTC, bid=101, ask=102, seq=2))
        await client.wait_for("price:update", 3)
        again = (await client.wait_for("price:status", 4))[-1]
        assert again["asset"] == BTC and again["status"] == "live"
        assert client.received("price:update")[-1]["seq"] == 2
        assert ETH not in {s["asset"] for s in client.received("price:status")[2:]}


async def test_halted_and_open(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server)
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, tick(BTC, seq=1))
        await client.wait_for("price:update")
        await feed(gateway, {"asset": BTC, "status": "halted"}, tick(BTC, bid=150, ask=151, seq=2))
        halted = (await client.wait_for("price:status", 2))[-1]
        assert halted["asset"] == BTC and halted["status"] == "halted"
        ack = await client.call("price:subscribe", [BTC])
        assert ack["statuses"][0]["status"] == "halted" and ack["prices"][0]["seq"] == 1

        await eventually(lambda: _sampled(gateway, "realtime_feed_messages_total", outcome="halted"))
        samples = await scrape(gateway.url)
        assert sample(samples, "realtime_asset_status", asset=BTC, status="halted") == 1
        assert sample(samples, "realtime_asset_status", asset=BTC, status="live") == 0

        await feed(gateway, {"asset": BTC, "status": "open"}, tick(BTC, bid=160, ask=161, seq=3))
        update = (await client.wait_for("price:update", 2))[-1]
        assert (update["bid"], update["seq"]) == (160, 3)
        assert [u["seq"] for u in client.received("price:update")] == [1, 3]  # the tick during the halt is gone
        assert client.received("price:status")[-1]["status"] == "live"


async def test_status_in_the_http_api_and_metrics(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await start(start_gateway, redis_server)
    await feed(gateway, tick(BTC, seq=1), {"asset": ETH, "status": "halted"})

    async def btc_live() -> bool:
        _, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("alice")))
        return bool(body["assets"][0]["status"]["status"] == "live")

    await eventually(btc_live)
    _, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("alice")))
    statuses = {a["name"]: a["status"] for a in body["assets"]}
    assert statuses[BTC]["status"] == "live" and statuses[ETH]["status"] == "halted"
    assert statuses[SOL]["status"] == "stale"  # no tick yet
    assert all(s["asset"] == name and isinstance(s["since"], int) for name, s in statuses.items())

    samples = await scrape(gateway.url)
    assert sample(samples, "realtime_asset_status", asset=BTC, status="live") == 1
    assert sample(samples, "realtime_asset_status", asset=SOL, status="stale") == 1
    assert 0 <= sample(samples, "realtime_last_tick_age_seconds", asset=BTC) < 60
    assert (("realtime_last_tick_age_seconds", frozenset({("asset", SOL)})) not in samples)


async def _sampled(gateway: InProcessGateway, name: str, **labels: str) -> bool:
    return sample(await scrape(gateway.url), name, **labels) > 0
