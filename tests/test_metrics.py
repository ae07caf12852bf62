"""`GET /metrics` from a running gateway under real traffic: the counters move as the traffic says."""

from __future__ import annotations

import contextlib
import time

from realtime.metrics import DISCONNECT_REASONS, Buckets, Metrics
from realtime.protocol import PriceUpdate
from tests.support import (
    ROOT,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connect_error,
    connected,
    eventually,
    free_port,
    publish,
    sample,
    scrape,
    token,
)

BTC, ETH = "BTC_USDC_PERP", "ETH_USDC_PERP"
TICKS = 5


async def test_counters_follow_the_traffic(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    suffix = str(free_port())
    channel = f"prices-{suffix}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=channel,
                                  manager_channel=f"socketio-{suffix}", demand_key=f"demand-{suffix}",
                                  demand_interval=0.5)
    before = await scrape(gateway.url)
    assert sample(before, "realtime_connects_total") == 0
    assert sample(before, "realtime_redis_up", component="feed") == 1
    assert sample(before, "realtime_redis_up", component="manager") == 1

    # Refusals by code.
    assert (await connect_error(gateway.url))["code"] == "AUTH_REQUIRED"
    assert (await connect_error(gateway.url, auth={"token": "garbage"}))["code"] == "AUTH_INVALID"

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connected(gateway.url, auth={"token": token(name)}, transports=[kind]))
            for name, kind in [("alice", "websocket"), ("bob", "websocket"), ("carol", "polling")]
        ]
        # Client events by name and ack code.
        for client in clients:
            assert (await client.call("price:subscribe", [BTC]))["ok"] is True
        assert (await clients[0].call("price:subscribe", 42))["error"]["code"] == "BAD_REQUEST"
        assert (await clients[0].call("price:unsubscribe", [ETH]))["ok"] is True
        assert (await clients[0].call("no:such:event", 1))["error"]["code"] == "BAD_REQUEST"

        # Feed: good ticks for BTC, one of each bad kind.
        await publish(redis_server.url, channel, *[{"asset": BTC, "bid": 100 + i, "ask": 200, "seq": i + 1}
                                                   for i in range(TICKS)])
        await publish(redis_server.url, channel, "{not json", {"asset": "DOGE", "bid": 1, "ask": 2},
                      {"asset": ETH, "bid": 3, "ask": 2}, {"asset": BTC, "bid": 1, "ask": 2, "seq": 1})
        for client in clients:
            await client.wait_for("price:update", TICKS, timeout=20)

        # Subscriber counts reach the demand store on the next refresh.
        async def demand_seen() -> bool:
            return sample(await scrape(gateway.url), "realtime_demand_subscribers", asset=BTC) == 3
        await eventually(demand_seen, timeout=20)

        during = await scrape(gateway.url)
        assert sample(during, "realtime_connections", transport="websocket") == 2
        assert sample(during, "realtime_connections", transport="polling") == 1
        assert sample(during, "realtime_connects_total") == 3
        assert sample(during, "realtime_connect_refusals_total", code="AUTH_REQUIRED") == 1
        assert sample(during, "realtime_connect_refusals_total", code="AUTH_INVALID") == 1
        assert sample(during, "realtime_client_events_total", event="price:subscribe", code="ok") == 3
        assert sample(during, "realtime_client_events_total", event="price:subscribe", code="BAD_REQUEST") == 1
        assert sample(during, "realtime_client_events_total", event="price:unsubscribe", code="ok") == 1
        # Unknown event names are one label value, whatever clients send.
        assert sample(during, "realtime_client_events_total", event="other", code="BAD_REQUEST") == 1
        assert sample(during, "realtime_subscribers", asset=BTC) == 3
        assert sample(during, "realtime_subscribers", asset=ETH) == 0
        for outcome in ("malformed", "unknown", "crossed", "stale"):
            assert sample(during, "realtime_feed_messages_total", outcome=outcome) == 1, outcome
        assert sample(during, "realtime_feed_messages_total", outcome="ok") == TICKS
        assert sample(during, "realtime_price_deliveries_total") == 3 * TICKS
        assert sample(during, "realtime_fanout_duration_seconds_count") == TICKS
        assert sample(during, "realtime_tick_to_wire_seconds_count", asset=BTC) == TICKS
        assert sample(during, "realtime_tick_to_wire_seconds_count", asset=ETH) == 0
        # Ticks never go through the manager (every pod reads the feed itself).
        assert sample(during, "realtime_manager_messages_total", direction="out") == 0

        await clients[0].client.disconnect()

        async def disconnect_counted() -> bool:
            samples = await scrape(gateway.url)
            # The reason is python-socketio's; whichever it is, it is one of its fixed set.
            reasons = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
                       if name == "realtime_disconnects_total"}
            return (sum(reasons.values()) == 1 and set(reasons) <= DISCONNECT_REASONS
                    and sample(samples, "realtime_connections", transport="websocket") == 1
                    and sample(samples, "realtime_subscribers", asset=BTC) == 2)
        await eventually(disconnect_counted, timeout=20)

    # The metrics page documents every family the gateway exports.
    page = (ROOT / "docs" / "metrics.md").read_text()
    families = {_family(name) for name, _ in await scrape(gateway.url) if name.startswith("realtime_")}
    assert families and {f for f in families if f"`{f}`" not in page and f"`{f}_total`" not in page} == set()


def _family(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_created"):
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


async def test_redis_state_and_reconnects(start_gateway: InProcessFactory, own_redis: RedisServer) -> None:
    gateway = await start_gateway(redis_url=own_redis.url, redis_retry_max=0.5)
    own_redis.stop()

    async def down() -> bool:
        samples = await scrape(gateway.url)
        return (sample(samples, "realtime_redis_up", component="feed") == 0
                and sample(samples, "realtime_redis_up", component="manager") == 0)
    await eventually(down, timeout=30)

    own_redis.start()

    async def back() -> bool:
        samples = await scrape(gateway.url)
        return all(sample(samples, "realtime_redis_up", component=c) == 1
                   and sample(samples, "realtime_redis_reconnects_total", component=c) >= 1
                   for c in ("feed", "manager"))
    await eventually(back, timeout=60)


async def test_embedded_mode_exports_no_redis_series(start_gateway: InProcessFactory) -> None:
    gateway: InProcessGateway = await start_gateway(simulated_rate=50, allow_anonymous=True)
    async with connected(gateway.url) as client:
        await client.call("price:subscribe", [BTC])
        await client.wait_for("price:update", 3, timeout=20)
    samples = await scrape(gateway.url)
    assert not any(name.startswith("realtime_redis") or name.startswith("realtime_manager")
                   for name, _ in samples)
    assert sample(samples, "realtime_price_deliveries_total") >= 3
    assert sample(samples, "process_resident_memory_bytes") > 0


def test_registries_are_per_server_and_latency_is_clamped() -> None:
    first, second = Metrics("a"), Metrics("b")  # a global registry would refuse the second
    future: PriceUpdate = {"asset": BTC, "bid": 1, "ask": 2, "decimals": 4, "seq": 1,
                           "ts": int(time.time() * 1000) + 60_000}
    first.tick_sent(future, recipients=7, seconds=0.001)
    assert first.registry.get_sample_value("realtime_price_deliveries_total") == 7
    assert second.registry.get_sample_value("realtime_price_deliveries_total") == 0
    # An upstream clock a minute ahead lands in the lowest bucket, not below zero.
    assert first.registry.get_sample_value("realtime_tick_to_wire_seconds_bucket",
                                           {"asset": BTC, "le": "0.001"}) == 1
    assert first.registry.get_sample_value("realtime_tick_to_wire_seconds_sum", {"asset": BTC}) == 0


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    buckets = Buckets((0.001, 0.01))
    for value in (0.0005, 0.001, 0.002, 5.0):
        buckets.observe(value)
    assert buckets.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert buckets.total == 0.0005 + 0.001 + 0.002 + 5.0
