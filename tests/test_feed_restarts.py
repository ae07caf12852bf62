"""Issue 12, items 5 and 6: feed restarts and poisoned numbers never freeze prices; float timestamps pass.

Real gateways on real Redis with real python-socketio clients. Each client
keeps only ticks above the highest `seq` it has seen, as the README tells
clients to, so a `seq` that stopped rising on the wire would show up as
prices that never change.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    Recorder,
    RedisServer,
    connected,
    feed,
    free_port,
    node_session,
    sample,
    scrape,
    token,
)

BTC = "BTC_USDC_PERP"


def quote(bid: int, **extra: Any) -> dict[str, Any]:
    return {"asset": BTC, "bid": bid, "ask": bid + 1, **extra}


def shown(client: Recorder) -> list[int]:
    """The bids a client that drops ticks at or below its highest seq would show, in order."""
    highest, bids = 0, []
    for update in client.received("price:update"):
        if update["seq"] > highest:
            highest = update["seq"]
            bids.append(update["bid"])
    return bids


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_feed_restarts_freeze_prices(gateway: InProcessGateway) -> None:
    """Item 5: the publisher restarts and counts from 1 again (with a newer ts): prices go on at once."""
    ts = now_ms()
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, *[quote(100 + s, seq=s, ts=ts + s) for s in (500, 501, 502)])
        await feed(gateway, *[quote(200 + s, seq=s, ts=ts + 1000 + s) for s in (1, 2, 3)])
        updates = await client.wait_for("price:update", 6)
        assert shown(client) == [600, 601, 602, 201, 202, 203]
        assert [u["seq"] for u in updates] == [500, 501, 502, 503, 504, 505]
        ack = await client.call("price:subscribe", [BTC])
        assert ack["prices"][0]["seq"] == 505
    assert sample(await scrape(gateway.url), "realtime_feed_restarts_total", asset=BTC) == 1
    assert "BTC_USDC_PERP numbering started again" in gateway.logs()


async def test_feed_restarts_reach_the_readme_javascript_client(start_gateway: InProcessFactory,
                                                               redis_server: RedisServer) -> None:
    """Item 5 with node socket.io-client running the README's example, which drops ticks at or below its highest seq."""
    suffix = str(free_port())
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", jwt_secret=None, dev=True)
    ts = now_ms()
    async with node_session("example.mjs", {"url": gateway.url}) as client:
        await feed(gateway, quote(100, seq=70, ts=ts))
        assert (await client.until("render"))["update"]["bid"] == 100
        await feed(gateway, *[quote(200 + s, seq=s, ts=ts + 1000 + s) for s in (1, 2)])
        rendered = [(await client.until("render"))["update"] for _ in range(2)]
    assert [(u["bid"], u["seq"]) for u in rendered] == [(201, 71), (202, 72)]


async def test_feed_restarts_without_ts_resume_within_a_few_ticks(gateway: InProcessGateway) -> None:
    """Item 5, a publisher that sends no ts: a short run of rising ticks below the last is a restart."""
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(100, seq=900), *[quote(200 + s, seq=s) for s in range(1, 7)])
        await client.wait_for("price:update", 5)
        assert shown(client) == [100, 203, 204, 205, 206]
    assert sample(await scrape(gateway.url), "realtime_feed_restarts_total", asset=BTC) == 1


async def test_one_poisoned_seq_near_2_53_cannot_silence_an_asset(gateway: InProcessGateway) -> None:
    """Item 5: no single message silences an asset, on the gateway or on a client."""
    ts = now_ms()
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(100, seq=1, ts=ts), quote(666, seq=2**53 - 1, ts=ts + 1),  # refused outright
                   quote(101, seq=2, ts=ts + 2), quote(777, seq=2**52, ts=ts + 3),  # leaps 2**52: held to the run
                   quote(102, seq=3, ts=ts + 4), quote(103, seq=4, ts=ts + 5))
        await client.wait_for("price:update", 4)
        assert shown(client) == [100, 101, 102, 103]
        assert all(u["seq"] < 2**32 for u in client.received("price:update"))


async def test_one_poisoned_seq_first_on_a_pod_cannot_silence_an_asset(gateway: InProcessGateway) -> None:
    """Item 5: a huge seq as the very first tick is believed, and the next ones still flow above it."""
    ts = now_ms()
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(666, seq=2**52, ts=ts), *[quote(100 + s, seq=s, ts=ts + s) for s in (1, 2, 3)])
        await client.wait_for("price:update", 4)
        assert shown(client) == [666, 101, 102, 103]
        assert max(u["seq"] for u in client.received("price:update")) < 2**53


async def test_timestamps_as_real_feeds_send_them(gateway: InProcessGateway) -> None:
    """Item 6: a float ts is normalised to integer ms; only non-numeric, negative or absurd ts is refused."""
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(gateway, quote(100, ts=1_764_500_000_123.4),
                   quote(101, ts="1764500000124"), quote(102, ts=-1), quote(103, ts=1e300), quote(104, ts=True),
                   quote(105, ts=1_764_500_000_125))
        updates = await client.wait_for("price:update", 2)
    assert [(u["bid"], u["ts"]) for u in updates] == [(100, 1_764_500_000_123), (105, 1_764_500_000_125)]
    assert all(isinstance(u["ts"], int) for u in updates)
    assert sample(await scrape(gateway.url), "realtime_feed_messages_total", outcome="malformed") == 4


async def test_two_pods_number_a_restarted_feed_alike(start_gateway: InProcessFactory,
                                                     redis_server: RedisServer) -> None:
    """Issue 11's note with item 5: every pod gives a tick the same seq, across a publisher restart."""
    suffix = str(free_port())
    channels = {"price_channel": f"prices-{suffix}", "manager_channel": f"socketio-{suffix}"}
    pods = [await start_gateway(redis_url=redis_server.url, instance_id=f"pod{i}", **channels) for i in range(2)]
    ts = now_ms()
    async with connected(pods[0].url, auth={"token": token("a")}) as a, \
            connected(pods[1].url, auth={"token": token("b")}) as b:
        for client in (a, b):
            await client.call("price:subscribe", [BTC])
        await feed(pods[0],
                   *[quote(100 + s, seq=s, ts=ts + s) for s in (40, 41)],
                   *[quote(200 + s, seq=s, ts=ts + 100 + s) for s in (1, 2)],  # restart with ts
                   *[quote(300 + s, seq=s) for s in (1, 2, 3, 4)])  # then without ts: a replay, then on
        for client in (a, b):
            await client.wait_for("price:update", 6)
        ticks = [[(u["seq"], u["bid"]) for u in c.received("price:update")] for c in (a, b)]
        assert ticks[0] == ticks[1]
        seqs = [seq for seq, _ in ticks[0]]
        assert seqs == sorted(set(seqs)) and [bid for _, bid in ticks[0]] == [140, 141, 201, 202, 303, 304]

        # A pod started after the restart (a deploy) numbers like the pods that saw it.
        late = await start_gateway(redis_url=redis_server.url, instance_id="pod-late", **channels)
        async with connected(late.url, auth={"token": token("c")}) as c:
            await c.call("price:subscribe", [BTC])
            await feed(pods[0], quote(500, seq=5, ts=ts + 900))
            last = [(await client.wait_for("price:update", count))[-1] for client, count in ((a, 7), (b, 7), (c, 1))]
    assert last[0] == last[1] == last[2] and last[0]["seq"] == seqs[-1] + 1
