"""Before and around authentication (issue 12, items 1-4, 7-9), each scenario against real processes.

Raw Engine.IO websockets (aiohttp) where the attack is at the wire, python-socketio
clients for the per-user cap race, node socket.io-client where the client's own
retry behaviour is the point (tests/js/burst.mjs, tests/js/drain.mjs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tests.support import (
    ClusterFactory,
    Gateway,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connected,
    eventually,
    http_json,
    node_session,
    run_node,
    sample,
    scrape,
    token,
)

BTC = "BTC_USDC_PERP"


def ws_url(gateway: InProcessGateway, query: str = "") -> str:
    return gateway.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket" + query


@contextlib.asynccontextmanager
async def engine_session(gateway: InProcessGateway) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A raw Engine.IO websocket session, OPEN read, no Socket.IO CONNECT yet."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(gateway)) as ws:
        assert (await ws.receive_str(timeout=10)).startswith("0")
        yield ws


async def next_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> str | None:
    """The next Engine.IO text message (pings answered on the way); None once the server closed the socket."""
    while True:
        message = await ws.receive(timeout=timeout)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return None
        if message.data == "2":
            await ws.send_str("3")
            continue
        return str(message.data)


async def until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> list[str]:
    """Everything the server sends until it closes the websocket."""
    seen = []
    while (text := await next_text(ws, timeout)) is not None:
        seen.append(text)
    return seen


async def sessions(gateway: InProcessGateway) -> float:
    """Engine.IO sessions the pod holds (`realtime_connections`, every transport)."""
    samples = await scrape(gateway.url)
    return sum(value for (name, _), value in samples.items() if name == "realtime_connections")


# 1. Limiter bypass.

async def test_limiter_bypass_an_empty_or_valueless_sid_is_counted(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_rate=0.01, connect_burst=3)
    polling = gateway.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        # Each of these opens a new session (python-engineio drops blank values): each is counted.
        for query in ("&sid=", "&sid", "&sid=&sid="):
            async with http.get(polling + query) as response:
                assert response.status == 200, query
                assert (await response.text()).startswith('0{"sid":'), query
        # The budget of 3 is spent: an empty sid on a websocket, or none at all, is refused.
        try:
            async with http.ws_connect(ws_url(gateway, "&sid=")):
                raise AssertionError("a fourth new session was opened")
        except aiohttp.WSServerHandshakeError as error:
            assert error.status == 429
        async with http.get(polling + "&sid") as response:
            assert response.status == 429
            assert (await response.json())["error"]["code"] == "TOO_MANY_CONNECTIONS"
        async with http.get(polling) as response:
            assert response.status == 429
    assert sample(await scrape(gateway.url), "realtime_connect_rate_limited_total") == 3


# 2. Sessions that never authenticate.

async def test_sessions_that_never_authenticate_are_closed_and_counted(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_timeout=1, max_connections=3, connect_rate=0)
    polling = gateway.url + "/socket.io/?EIO=4&transport=polling"
    async with connected(gateway.url, auth={"token": token("alice")}) as alice, \
            engine_session(gateway) as silent, aiohttp.ClientSession() as http:
        async with http.get(polling) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        # Three Engine.IO sessions, one of them authenticated: the pod is full for a fourth.
        async with http.get(polling) as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["error"]["code"] == "UNAVAILABLE"
        # Without a CONNECT in time, both unauthenticated sessions are closed.
        assert await until_closed(silent) == ["1"]
        await eventually(lambda: _gone(http, polling, sid), timeout=10)
        await eventually(lambda: _counted(gateway, "realtime_connect_timeouts_total", 2), timeout=10)
        assert await sessions(gateway) == 1
        # The authenticated connection, older than both, is untouched; room for new sessions again.
        assert alice.client.connected
        assert (await alice.call("price:subscribe", [BTC]))["ok"] is True
        async with connected(gateway.url, auth={"token": token("bob")}) as bob:
            assert (await bob.call("price:subscribe", [BTC]))["ok"] is True


async def _gone(http: aiohttp.ClientSession, polling: str, sid: str) -> bool:
    """A polling session is gone once a GET for it is refused (after any final CLOSE)."""
    async with http.get(f"{polling}&sid={sid}") as response:
        return response.status == 400


async def _counted(gateway: InProcessGateway, name: str, expected: float) -> bool:
    return sample(await scrape(gateway.url), name) == expected


# 3. CONNECT floods.

async def test_connect_floods_close_the_session(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_rate=0)
    async with engine_session(gateway) as ws:
        for _ in range(3):
            await ws.send_str("40" + json.dumps({"token": "not-a-jwt"}))
            refusal = await next_text(ws)
            assert refusal is not None and refusal.startswith("44"), refusal
            assert json.loads(refusal[2:])["data"]["code"] == "AUTH_INVALID"
        await ws.send_str("40" + json.dumps({"token": token("mallory")}))
        assert await until_closed(ws) == ["1"]
    assert sample(await scrape(gateway.url), "realtime_connect_floods_total") == 1


async def test_connect_floods_disconnect_and_connect_do_not_reset_the_event_budget(
        start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_rate=0, event_rate=0.001, event_burst=2)
    subscribe = '["price:subscribe",["BTC_USDC_PERP"]]'
    async with engine_session(gateway) as ws:
        await ws.send_str("40" + json.dumps({"token": token("mallory")}))
        assert (await next_text(ws) or "").startswith("40")
        codes = []
        for ack_id in (1, 2, 3):
            await ws.send_str(f"42{ack_id}{subscribe}")
            ack = json.loads((await next_text(ws) or "")[2 + len(str(ack_id)):])[0]
            codes.append("ok" if ack["ok"] else ack["error"]["code"])
        assert codes == ["ok", "ok", "RATE_LIMITED"]
        # Leave the namespace and come back on the same Engine.IO session: the budget is still spent.
        await ws.send_str("41")
        await ws.send_str("40" + json.dumps({"token": token("mallory")}))
        assert (await next_text(ws) or "").startswith("40")
        await ws.send_str(f"424{subscribe}")
        ack = json.loads((await next_text(ws) or "")[3:])[0]
        assert ack["error"]["code"] == "RATE_LIMITED"


# 4. Binary packets.

async def test_binary_packets_close_the_transport(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_rate=0)
    async with connected(gateway.url, auth={"token": token("bob")}) as bystander:
        # After CONNECT: a packet announcing an attachment (here a billion of them), then the attachments.
        async with engine_session(gateway) as ws:
            await ws.send_str("40" + json.dumps({"token": token("mallory")}))
            assert (await next_text(ws) or "").startswith("40")
            await ws.send_str('45999999999-["price:subscribe",{"_placeholder":true,"num":0}]')
            with contextlib.suppress(ConnectionResetError):
                for _ in range(20):
                    await ws.send_bytes(b"\x00" * 16000)
            assert await until_closed(ws) == ["1"]
        # Before CONNECT: a bare binary frame.
        async with engine_session(gateway) as ws:
            await ws.send_bytes(b"\x00\x01")
            assert await until_closed(ws) == ["1"]
        # A binary ack, after CONNECT.
        async with engine_session(gateway) as ws:
            await ws.send_str("40" + json.dumps({"token": token("mallory")}))
            assert (await next_text(ws) or "").startswith("40")
            await ws.send_str('461-[{"_placeholder":true,"num":0}]')
            assert await until_closed(ws) == ["1"]
        assert (await bystander.call("price:subscribe", [BTC]))["ok"] is True
    samples = await scrape(gateway.url)
    assert sample(samples, "realtime_binary_packets_total") == 3
    assert await sessions(gateway) == 0


# 7. Bursts are not abuse (the gateway's default limits).

async def test_bursts_are_not_abuse(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway()
    rows = [BTC, "ETH_USDC_PERP", "SOL_USDC_PERP"] * 66 + [BTC, BTC]
    lines = await run_node("burst.mjs", json.dumps({"url": gateway.url, "token": token("trader"), "rows": rows}))
    burst = next(line for line in lines if line["type"] == "burst")
    # The burst of 50 passes; the bucket refills at 10/s while the 200 are handled (a busy machine
    # takes longer), so a few more may pass; everything else is refused, and nothing else happens.
    codes = burst["codes"]
    assert set(codes) == {"ok", "RATE_LIMITED"} and codes["ok"] + codes["RATE_LIMITED"] == 200, burst
    assert 50 <= codes["ok"] <= 70, burst
    after = next(line for line in lines if line["type"] == "after")
    assert after["ack"]["ok"] is True and after["ack"]["subscribed"] == [BTC, "ETH_USDC_PERP", "SOL_USDC_PERP"]
    assert after["connected"] is True and after["disconnects"] == []
    assert sample(await scrape(gateway.url), "realtime_sessions_ended_total", code="RATE_LIMITED") == 0


# 8. Drain refusals are final -> retried elsewhere.

@pytest.mark.slow
async def test_drain_refusals_are_retried_on_another_pod(start_cluster: ClusterFactory, own_redis: RedisServer
                                                         ) -> None:
    # Per-user presence on Redis: a draining pod gives its slots up first, which takes up to
    # REALTIME_REDIS_TIMEOUT while Redis hangs. A CONNECT that arrives then finds the pod draining.
    cluster = start_cluster(2, redis=own_redis, max_connections_per_user=10, redis_timeout=5, shutdown_grace=10)
    assert own_redis.process is not None
    async with node_session("drain.mjs", {"url": cluster.url, "token": token("trader")}) as node:
        await node.until("auth_asked")
        counts = [await sessions(pod) for pod in cluster.pods]
        assert sorted(counts) == [0, 1], counts
        victim = cluster.pods[counts.index(1)]
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            victim.signal(signal.SIGTERM)
            await eventually(lambda: _draining(victim), timeout=5, interval=0.01)
            await node.send({"go": True})
            # The CONNECT reached the draining pod: no final connect_error, a retry that lands elsewhere.
            outcome = await node.until("ack", timeout=40)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
    assert outcome["instance"] != victim.env["REALTIME_INSTANCE_ID"]
    assert [line for line in node.lines if line["type"] == "connect_error"] == []
    assert len([line for line in node.lines if line["type"] == "auth_asked"]) >= 2


async def _draining(pod: Gateway) -> bool:
    status, _ = await http_json(pod.url + "/ready")
    return status == 503


# 9. Per-user cap races.

@pytest.mark.slow
async def test_per_user_cap_races_leave_at_most_the_cap(start_cluster: ClusterFactory) -> None:
    cap = 3
    cluster = start_cluster(2, max_connections_per_user=cap, connect_rate=0)
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(cap + 20)]

    async def connect(i: int, client: socketio.AsyncClient) -> None:
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await client.connect(cluster.pods[i % 2].url, auth={"token": token("alice")},
                                 transports=["websocket"], wait_timeout=10)

    try:
        await asyncio.gather(*(connect(i, client) for i, client in enumerate(clients)))

        async def settled() -> bool:
            alive = sum(client.connected for client in clients)
            held = sum([(await http_json(pod.url + "/health"))[1]["connections"] for pod in cluster.pods])
            return alive == held == cap

        await eventually(settled, timeout=20, interval=0.2)
        redis = aioredis.Redis.from_url(cluster.redis.url)
        try:
            key = f"{{{cluster.env['REALTIME_MANAGER_CHANNEL']}:presence}}:user:alice"
            assert await redis.zcard(key) == cap
        finally:
            await redis.aclose()
    finally:
        await asyncio.gather(*(client.disconnect() for client in clients), return_exceptions=True)
