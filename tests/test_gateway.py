"""SPEC §2-4 against a real gateway process, real Redis and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio

from tests.support import (
    Gateway,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connect_error,
    connected,
    eventually,
    feed,
    http_json,
    run_node,
    scrape,
    ticking,
    token,
)

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"


def tick(asset: str = BTC, bid: int = 100, ask: int = 101, **extra: Any) -> dict[str, Any]:
    return {"asset": asset, "bid": bid, "ask": ask, **extra}


# Connect: where the token may be, and every refusal code.

@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_token_in_auth_query_or_header(gateway: InProcessGateway, transport: str) -> None:
    placements: list[dict[str, Any]] = [
        {"auth": {"token": token("alice")}},
        {"query": f"token={token('alice')}"},
        {"headers": {"Authorization": f"Bearer {token('alice')}"}},
    ]
    for placement in placements:
        async with connected(gateway.url, transports=[transport], **placement) as client:
            ack = await client.call("price:subscribe", [BTC])
            assert ack["ok"] is True and ack["subscribed"] == [BTC]


async def test_refusal_codes(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway()
    assert (await connect_error(gateway.url))["code"] == "AUTH_REQUIRED"
    for bad in ["garbage", token("alice", secret="another-secret-of-sufficient-length!"), "a.b.c"]:
        assert (await connect_error(gateway.url, auth={"token": bad}))["code"] == "AUTH_INVALID"
    expired = token("alice", ttl=-3600)
    refused = await connect_error(gateway.url, auth={"token": expired})
    assert refused == {"code": "AUTH_EXPIRED", "message": "token has expired"}
    assert (await connect_error(gateway.url, auth={"token": 42}))["code"] == "AUTH_INVALID"
    # The refused sids left nothing behind.
    await eventually(lambda: _connections(gateway, 0))


async def test_a_full_pod_refuses_at_the_handshake_and_the_client_may_retry(start_gateway: InProcessFactory) -> None:
    # REALTIME_MAX_CONNECTIONS counts Engine.IO sessions (issue 12): past it the handshake gets 503,
    # a transport error socket.io-client retries (nginx passes it to the next pod), never a final connect_error.
    gateway = await start_gateway(max_connections=1)
    async with connected(gateway.url, auth={"token": token("alice")}):
        status, body = await http_json(gateway.url + "/socket.io/?EIO=4&transport=polling")
        assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
        refused = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        refused.on("connect_error", errors.append)
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(gateway.url, auth={"token": token("bob")}, transports=["websocket"],
                                      wait_timeout=10)
        finally:
            await refused.disconnect()
        # A transport error, never a server's coded refusal.
        assert errors == ["Connection error"]
    # The slot is free again once the Engine.IO session is gone.
    await eventually(lambda: _sessions(gateway, 0))
    async with connected(gateway.url, auth={"token": token("bob")}) as client:
        assert client.client.connected


async def test_anonymous_only_when_allowed(start_gateway: InProcessFactory) -> None:
    closed = await start_gateway()
    assert (await connect_error(closed.url))["code"] == "AUTH_REQUIRED"
    open_ = await start_gateway(allow_anonymous=True)
    async with connected(open_.url) as client:
        ack = await client.call("price:subscribe", BTC)
        assert ack["subscribed"] == [BTC]


async def test_js_client_connect_error_shape(gateway: InProcessGateway) -> None:
    lines = await run_node("client.mjs", json.dumps({"url": gateway.url, "auth": {"token": "nope"}}))
    assert lines == [{"type": "connect_error", "message": "AUTH_INVALID",
                      "data": {"code": "AUTH_INVALID", "message": lines[0]["data"]["message"]}}]
    lines = await run_node("client.mjs", json.dumps({"url": gateway.url, "transports": ["polling"]}))
    assert lines[0]["message"] == "AUTH_REQUIRED" and lines[0]["data"]["code"] == "AUTH_REQUIRED"


# Subscribe and unsubscribe.

async def test_subscribe_ack_shape_and_snapshot(gateway: InProcessGateway) -> None:
    await feed(gateway, tick(BTC, 958500000, 967500000, seq=7, ts=1763700000123))
    await eventually(lambda: _has_price(gateway, BTC))
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        ack = await client.call("price:subscribe", ["btc_usdc_perp", ETH, "DOGE", BTC])
    assert ack["ok"] is True
    assert ack["subscribed"] == [BTC, ETH]  # catalog spelling, once each
    assert ack["rejected"] == [{"asset": "DOGE", "code": "UNKNOWN_ASSET"}]
    assert ack["prices"] == [{"asset": BTC, "bid": 958500000, "ask": 967500000, "decimals": 4,
                              "seq": 7, "ts": 1763700000123}]
    assert ack["instance"]


async def test_assets_claim_and_subscription_cap(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await start_gateway(redis_url=redis_server.url, max_subscriptions=2)
    async with connected(gateway.url, auth={"token": token("alice", assets=[BTC, ETH, "sol_usdc_perp"])}) as client:
        ack = await client.call("price:subscribe", [BTC, ETH, SOL])
        assert ack["subscribed"] == [BTC, ETH]
        assert ack["rejected"] == [{"asset": SOL, "code": "TOO_MANY_SUBSCRIPTIONS"}]
    async with connected(gateway.url, auth={"token": token("bob", assets=[BTC])}) as client:
        ack = await client.call("price:subscribe", [BTC, ETH])
        assert ack["subscribed"] == [BTC]
        assert ack["rejected"] == [{"asset": ETH, "code": "FORBIDDEN"}]


async def test_unsubscribe_stops_updates(gateway: InProcessGateway) -> None:
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC, ETH])
        ack = await client.call("price:unsubscribe", ["btc_usdc_perp", "DOGE"])
        assert ack == {"ok": True, "unsubscribed": [BTC]}
        await feed(gateway, tick(BTC, seq=1), tick(ETH, seq=1))
        updates = await client.wait_for("price:update")
        await asyncio.sleep(0.2)  # a quiet window: nothing more may arrive, which no condition can signal
        assert [u["asset"] for u in client.received("price:update")] == [ETH]
        assert updates[0]["asset"] == ETH


GARBAGE: list[tuple[Any, ...]] = [
    (), (None,), (42,), (3.5,), (True,), ({},), ({"asset": BTC},), ([],), ([[BTC]],), ([1, 2],),
    ([None],), (["x" * 10_000],), ([""],), ([BTC] * 1500,), ("",), (BTC, "extra", 1),
]


@pytest.mark.parametrize("event", ["price:subscribe", "price:unsubscribe", "auth:refresh"])
async def test_garbage_payloads_get_bad_request(gateway: InProcessGateway, event: str) -> None:
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        for args in GARBAGE:
            if event != "auth:refresh" and args and isinstance(args[0], str) and args[0] == BTC:
                continue  # a plain asset name (extra arguments are ignored) is valid for subscribe
            ack = await client.call(event, *args)
            assert ack["ok"] is False, (event, args, ack)
            assert ack["error"]["code"] in {"BAD_REQUEST", "AUTH_INVALID"}, (event, args, ack)
            if event != "auth:refresh" or not (args and isinstance(args[0], dict)):
                assert ack["error"]["code"] == "BAD_REQUEST", (event, args, ack)
        ack = await client.call("no:such:event", {"x": 1})
        assert ack["error"]["code"] == "BAD_REQUEST"
        # Still serving.
        assert (await client.call("price:subscribe", [BTC]))["ok"] is True


# Ticks from the feed.

async def test_bad_feed_messages_are_dropped_then_good_one_flows(process_gateway: Gateway) -> None:
    gateway = process_gateway  # the process must outlive every bad message
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [BTC])
        await feed(
            gateway,
            b"not json", "[]", "null", json.dumps({"asset": BTC}),
            tick(BTC, bid="100"), tick(BTC, bid=-1), tick(BTC, bid=True), tick(BTC, bid=2**60),
            tick("DOGE"), tick(BTC, bid=102, ask=101),  # unknown, crossed
            tick(BTC, seq=10), tick(BTC, seq=10), tick(BTC, seq=9),  # replay and stale after the first
            tick(BTC, bid=200, ask=201, seq=11, ts=5),
        )
        updates = await client.wait_for("price:update", 2)
        await asyncio.sleep(0.2)  # a quiet window: nothing more may arrive, which no condition can signal
        assert [(u["seq"], u["bid"]) for u in client.received("price:update")] == [(10, 100), (11, 200)]
        assert updates[1] == {"asset": BTC, "bid": 200, "ask": 201, "decimals": 4, "seq": 11, "ts": 5}
    assert "dropped malformed tick" in gateway.logs()
    assert gateway.process is not None and gateway.process.poll() is None


async def test_pod_numbers_ticks_without_seq_and_stamps_ts(gateway: InProcessGateway) -> None:
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [SOL])
        before = int(time.time() * 1000)
        await feed(gateway, *[tick(SOL, bid=i, ask=i + 1) for i in range(1, 21)])
        updates = await client.wait_for("price:update", 20)
    assert [u["seq"] for u in updates] == list(range(1, 21))
    assert [u["bid"] for u in updates] == list(range(1, 21))
    assert all(u["decimals"] == 2 and u["ts"] >= before for u in updates)


async def test_assets_are_isolated(gateway: InProcessGateway) -> None:
    token_a, token_b = token("alice"), token("bob")
    async with connected(gateway.url, auth={"token": token_a}) as a, \
            connected(gateway.url, auth={"token": token_b}, transports=["polling"]) as b:
        await a.call("price:subscribe", [BTC])
        await b.call("price:subscribe", [ETH])
        await feed(gateway, tick(BTC, seq=1), tick(ETH, seq=1), tick(SOL, seq=1), tick(BTC, seq=2))
        await a.wait_for("price:update", 2)
        await b.wait_for("price:update", 1)
        await asyncio.sleep(0.3)  # a quiet window: nothing more may arrive, which no condition can signal
        assert {u["asset"] for u in a.received("price:update")} == {BTC}
        assert [u["asset"] for u in b.received("price:update")] == [ETH]


async def test_js_client_receives_updates(gateway: InProcessGateway) -> None:
    for transports in (["websocket"], ["polling"]):
        plan = {"url": gateway.url, "auth": {"token": token("carol")}, "subscribe": ["eth_usdc_perp"],
                "updates": 3, "transports": transports}
        async with ticking(gateway, lambda n: [tick(ETH, bid=n, ask=n + 1)], 0.05):
            lines = await run_node("client.mjs", json.dumps(plan))
        assert lines[0] == {"type": "connect", "transport": transports[0]}
        ack = next(line["ack"] for line in lines if line["type"] == "ack")
        assert ack["ok"] is True and ack["subscribed"] == [ETH]
        seqs = [line["update"]["seq"] for line in lines if line["type"] == "update"]
        assert len(seqs) == 3 and seqs == sorted(set(seqs))


# Private events through the manager.

BACKEND = """
import asyncio, sys, socketio
async def main():
    manager = socketio.AsyncRedisManager(sys.argv[1], channel=sys.argv[2], write_only=True)
    await manager.emit("order:update", {"id": 7, "status": "filled"}, room=sys.argv[3])
asyncio.run(main())
"""


async def emit_from_backend(gateway: InProcessGateway, room: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BACKEND, gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_MANAGER_CHANNEL"], room)
    assert await process.wait() == 0


@contextlib.asynccontextmanager
async def users(gateway: InProcessGateway, *specs: tuple[str, list[str]]) -> AsyncIterator[list[Any]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connected(gateway.url, auth={"token": token(sub, roles=roles)}))
                   for sub, roles in specs]
        yield clients


async def test_write_only_emit_reaches_exactly_the_users_connections(gateway: InProcessGateway) -> None:
    async with users(gateway, ("bob", []), ("bob", ["risk"]), ("alice", ["risk"])) as (bob1, bob2, alice):
        await emit_from_backend(gateway, "user:bob")
        await bob1.wait_for("order:update")
        await bob2.wait_for("order:update")
        await emit_from_backend(gateway, "role:risk")
        await bob2.wait_for("order:update", 2)
        await alice.wait_for("order:update", 1)
        await asyncio.sleep(0.3)  # a quiet window: nothing more may arrive, which no condition can signal
        assert bob1.received("order:update") == [{"id": 7, "status": "filled"}]
        assert len(bob2.received("order:update")) == 2
        assert len(alice.received("order:update")) == 1


async def test_rooms_are_not_accepted_from_clients(gateway: InProcessGateway) -> None:
    async with users(gateway, ("mallory", []), ("bob", [])) as (mallory, bob):
        ack = await mallory.call("price:subscribe", ["user:bob", "asset:BTC_USDC_PERP", "role:admin"])
        assert ack["subscribed"] == []
        assert {r["code"] for r in ack["rejected"]} == {"UNKNOWN_ASSET"}
        await emit_from_backend(gateway, "user:bob")
        await bob.wait_for("order:update")
        await asyncio.sleep(0.3)  # a quiet window: nothing more may arrive, which no condition can signal
        assert mallory.received("order:update") == []


# Token refresh.

async def test_auth_refresh(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await start_gateway(redis_url=redis_server.url)
    async with connected(gateway.url, auth={"token": token("alice", roles=["risk"])}) as client:
        await client.call("price:subscribe", [BTC, ETH])
        fresh = token("alice", assets=[ETH], ttl=7200)
        ack = await client.call("auth:refresh", {"token": fresh})
        assert ack["ok"] is True and ack["exp"] > time.time() + 7000
        # Entitlements follow the new token: BTC is gone.
        again = await client.call("price:subscribe", [BTC])
        assert again["rejected"] == [{"asset": BTC, "code": "FORBIDDEN"}]
        other = await client.call("auth:refresh", {"token": token("bob")})
        assert other["error"]["code"] == "FORBIDDEN"
        expired = await client.call("auth:refresh", {"token": token("alice", ttl=-100)})
        assert expired["error"]["code"] == "AUTH_EXPIRED"
        invalid = await client.call("auth:refresh", {"token": "x.y.z"})
        assert invalid["error"]["code"] == "AUTH_INVALID"


# HTTP probes.

async def test_health_and_ready(gateway: InProcessGateway) -> None:
    status, body = await http_json(gateway.url + "/health")
    assert status == 200 and body["status"] == "ok" and body["redis"] == "up" and body["instance"]
    async with connected(gateway.url, auth={"token": token("alice")}):
        await eventually(lambda: _connections(gateway, 1))
    status, body = await http_json(gateway.url + "/ready")
    assert status == 200 and body["ready"] is True


async def _sessions(gateway: InProcessGateway, expected: int) -> bool:
    samples = await scrape(gateway.url)
    return sum(value for (name, _), value in samples.items() if name == "realtime_connections") == expected


async def _connections(gateway: InProcessGateway, expected: int) -> bool:
    _, body = await http_json(gateway.url + "/health")
    return bool(body["connections"] == expected)


async def _has_price(gateway: InProcessGateway, asset: str) -> bool:
    """The gateway has taken in a tick of `asset` (its REST view shows a latest price)."""
    _, body = await http_json(gateway.url + "/api/v1/assets", headers={"Authorization": f"Bearer {token('alice')}"})
    return any(entry["name"] == asset and entry["price"] is not None for entry in body["assets"])
