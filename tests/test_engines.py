"""Both websocket engines (REALTIME_ENGINE=lean|stock) with node's real socket.io-client.

Websocket, polling, the polling→websocket upgrade and msgpack each carry a
subscribe ack and price ticks; a client that stops answering pings is dropped
for it after one ping (ping interval + timeout); a client that stops reading
is cut as a slow consumer while the gateway keeps serving others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    NodeSession,
    RedisServer,
    backend_emit,
    connected,
    eventually,
    http_json,
    node_session,
    sample,
    scrape,
    served_on_redis,
    ticking,
    token,
)

BTC = "BTC_USDC_PERP"
ENGINES = pytest.mark.parametrize("engine", ["lean", "stock"])


def ticks(n: int) -> list[dict[str, Any]]:
    return [{"asset": BTC, "bid": n, "ask": n + 2, "seq": n}]


async def updates(client: NodeSession, count: int) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        seqs.append((await client.until("update"))["update"]["seq"])
    return seqs


async def session(gateway: InProcessGateway, user: str, **plan: Any) -> AsyncIterator[NodeSession]:
    async with node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token(user)}, **plan}) as client:
        yield client


@ENGINES
@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_every_transport_and_the_upgrade(start_gateway: InProcessFactory, redis_server: RedisServer,
                                               engine: str, serializer: str) -> None:
    gateway = await served_on_redis(start_gateway, redis_server, engine=engine, serializer=serializer)
    msgpack = serializer == "msgpack"
    plans = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": ["polling", "websocket"]}
    async with node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token("ws")}, "msgpack": msgpack,
                                           "transports": plans["websocket"], "subscribe": [BTC]}) as ws, \
            node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token("poll")}, "msgpack": msgpack,
                                        "transports": plans["polling"], "subscribe": [BTC]}) as poll, \
            node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token("up")}, "msgpack": msgpack,
                                        "transports": plans["upgrade"], "subscribe": [BTC]}) as up:
        for client, transports in ((ws, {"websocket"}), (poll, {"polling"}), (up, {"polling", "websocket"})):
            assert (await client.until("connect"))["transport"] in transports
            ack = (await client.until("ack"))["ack"]
            assert ack["ok"] is True and ack["subscribed"] == [BTC], ack
        assert any(line == {"type": "upgrade", "transport": "websocket"} for line in up.lines) or \
            (await up.until("upgrade"))["transport"] == "websocket"
        async with ticking(gateway, ticks, 0.05):
            got = await asyncio.gather(updates(ws, 5), updates(poll, 5), updates(up, 5))
        for seqs in got:
            assert seqs == sorted(set(seqs)), seqs


@ENGINES
async def test_a_client_that_stops_answering_pings_is_dropped_after_one_ping(start_gateway: InProcessFactory,
                                                                            engine: str) -> None:
    gateway = await start_gateway(engine=engine, ping_interval=0.5, ping_timeout=0.5)
    async with node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token("silent")},
                                           "silent": True}) as silent, \
            connected(gateway.url, auth={"token": token("alive")}) as alive:
        await silent.until("ready")
        # Node's rule: PING after the interval, no PONG within the timeout, dropped; no second PING.
        assert (await silent.until("disconnect"))["reason"] == "transport close"
        assert [line["type"] for line in silent.lines].count("ping") == 1, silent.lines
        samples = await scrape(gateway.url)
        assert sample(samples, "realtime_disconnects_total", reason="ping timeout") == 1
        # A client that answers stays.
        assert (await alive.call("price:subscribe", [BTC]))["ok"] is True
        _, health = await http_json(gateway.url + "/health")
        assert health["connections"] == 1


@ENGINES
async def test_a_client_that_stops_reading_is_cut_and_others_are_served(start_gateway: InProcessFactory,
                                                                       redis_server: RedisServer,
                                                                       engine: str) -> None:
    gateway = await served_on_redis(start_gateway, redis_server, engine=engine, slow_consumer_bytes=16 * 1024,
                                    slow_consumer_max_bytes=256 * 1024)
    async with node_session("engine.mjs", {"url": gateway.url, "auth": {"token": token("slow")}, "subscribe": [BTC],
                                           "stall": True}) as slow, \
            connected(gateway.url, auth={"token": token("fast")}) as fast:
        await slow.until("stalled")
        await fast.call("price:subscribe", [BTC])
        channel = gateway.env["REALTIME_MANAGER_CHANNEL"]
        pad = "x" * 16384
        n = 0

        async def cut() -> bool:
            return sample(await scrape(gateway.url), "realtime_slow_consumers_cut_total") == 1

        # Private events are never dropped: past the byte bound the connection is cut.
        while not await cut():
            for _ in range(64):
                n += 1
                await backend_emit(redis_server.url, channel, "order:update", {"n": n, "pad": pad}, "user:slow")
            assert n < 20_000, "never cut"
        async with ticking(gateway, ticks, 0.02):
            await fast.wait_for("price:update", 5, timeout=30)
        await slow.send({"cmd": "resume"})
        await slow.until("disconnect")
        await eventually(lambda: _connections(gateway, 1), timeout=10)


async def _connections(gateway: InProcessGateway, count: int) -> bool:
    _, health = await http_json(gateway.url + "/health")
    return bool(health["connections"] == count)
