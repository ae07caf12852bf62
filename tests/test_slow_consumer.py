"""Slow consumers (SPEC §7): a client that stops reading cannot grow the server's memory.

The slow client is a `RawClient` with a small receive buffer that simply stops
reading. The kernel on both sides absorbs up to `tcp_send_buffer_max()` plus a
little, so each test first pushes more than that through private events.
"""

from __future__ import annotations

import asyncio

from tests.support import (
    BTC,
    ETH,
    GatewayFactory,
    InProcessFactory,
    RawClient,
    RedisServer,
    backend,
    connected,
    http_json,
    publish_ticks,
    redis_gateway,
    rss_bytes,
    sample,
    scrape,
    seqs,
    served_on_redis,
    tcp_send_buffer_max,
    token,
)
from tests.support.recovery import publish_event

CHUNK = 64 * 1024  # bytes of one private event


async def test_stalled_reader_gets_newest_prices_and_every_private_event(start_gateway: InProcessFactory,
                                                                         redis_server: RedisServer) -> None:
    # A low collapse bound and a high cut bound: this client is behind, not cut.
    gateway = await served_on_redis(start_gateway, redis_server, slow_consumer_bytes=16 * 1024,
                                    slow_consumer_max_bytes=64 * 2**20)
    slow = await RawClient.connect(gateway.url, {"token": token("alice")}, receive_buffer=4096)
    await slow.call("price:subscribe", [BTC, ETH])
    fill = (tcp_send_buffer_max() + 2 * 2**20) // CHUNK
    ticks = 1000
    async with connected(gateway.url, auth={"token": token("alice")}) as witness, backend(gateway) as manager:
        # A connection joins its private rooms just after its CONNECT reply (through the event log's
        # reader); best-effort emits of that instant would miss it. A durable event both connections
        # received says they are in `user:alice`.
        await publish_event(gateway.url, "alice", "order:ready", {})
        await witness.wait_for("order:ready", timeout=10)
        while (await slow.receive()).name != "order:ready":
            pass
        # The slow client stops reading. Fill the pipe with private events; a second
        # connection of the same user shows when the gateway has handled them all.
        for n in range(1, fill + 1):
            await manager.emit("order:update", {"n": n, "pad": "x" * CHUNK}, room="user:alice", namespace="/")
        await witness.wait_for("order:update", fill, timeout=60)
        await publish_ticks(gateway, [BTC, ETH], ticks, burst=100)
        await manager.emit("order:update", {"n": fill + 1, "pad": ""}, room="user:alice", namespace="/")

        # Now it reads everything.
        orders: list[int] = []
        updates: list[dict[str, int]] = []

        async def read() -> None:
            while not (orders[-1:] == [fill + 1] and {BTC: ticks, ETH: ticks} == _last(updates)):
                packet = await slow.receive()
                if packet.name == "order:update":
                    orders.append(packet.args[0]["n"])
                elif packet.name == "price:update":
                    updates.append(packet.args[0])

        await asyncio.wait_for(read(), 60)
    await slow.close()
    # Private events are never dropped; each asset's ticks collapsed to the newest ones, in order.
    assert orders == list(range(1, fill + 2))
    for asset in (BTC, ETH):
        received = seqs(updates, asset)
        assert received == sorted(set(received)) and received[-1] == ticks
        assert len(received) < ticks // 2, len(received)


def _last(updates: list[dict[str, int]]) -> dict[str, int]:
    return {update["asset"]: update["seq"] for update in updates}


async def test_stalled_reader_is_cut_and_others_keep_every_tick(start_process: GatewayFactory,
                                                                redis_server: RedisServer) -> None:
    # A process: its resident memory is the measure.
    gateway = redis_gateway(start_process, redis_server, slow_consumer_max_bytes=2**20)
    assert gateway.process is not None
    slow = await RawClient.connect(gateway.url, {"token": token("slow")}, receive_buffer=4096)
    await slow.call("price:subscribe", [BTC])
    async with connected(gateway.url, auth={"token": token("fast")}) as fast, backend(gateway) as manager:
        await fast.call("price:subscribe", [BTC])
        baseline = rss_bytes(gateway.process.pid)
        ticks = 300
        publisher = asyncio.create_task(publish_ticks(gateway, [BTC], ticks, every=0.01))
        # Far more than the kernel buffers and the bound together: kept, it would show in RSS.
        flood = (tcp_send_buffer_max() + 24 * 2**20) // CHUNK
        peak = baseline
        for n in range(1, flood + 1):
            await manager.emit("order:update", {"n": n, "pad": "x" * CHUNK}, room="user:slow", namespace="/")
            if n % 16 == 0:
                peak = max(peak, rss_bytes(gateway.process.pid))
        await publisher
        await fast.wait_for("price:update", ticks, timeout=60)
        peak = max(peak, rss_bytes(gateway.process.pid))
        assert seqs(fast.received("price:update")) == list(range(1, ticks + 1))
        assert await slow.closed_by_server(timeout=30)
        _, health = await http_json(gateway.url + "/health")
        assert health["connections"] == 1
        assert sample(await scrape(gateway.url), "realtime_slow_consumers_cut_total") == 1
    await slow.close()
    assert "cut a slow consumer" in gateway.logs()
    assert peak - baseline < 12 * 2**20, (baseline, peak)
