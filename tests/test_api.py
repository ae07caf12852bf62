"""The HTTP API (`/api/v1/`) against real gateways, a real Redis and real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support import (
    Gateway,
    GatewayFactory,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    connected,
    eventually,
    free_port,
    http_json,
    publish,
    sample,
    scrape,
    token,
)

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"
SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def pod_settings(redis_server: RedisServer) -> dict[str, Any]:
    """Settings for two gateways sharing Redis channels and a demand key of their own."""
    suffix = str(free_port())
    return {"redis_url": redis_server.url, "price_channel": f"prices-{suffix}",
            "manager_channel": f"socketio-{suffix}", "demand_key": f"demand-{suffix}", "demand_interval": 0.5}


@pytest.fixture
async def pods(start_gateway: InProcessFactory, redis_server: RedisServer
               ) -> tuple[InProcessGateway, InProcessGateway]:
    """Two in-process gateways sharing Redis channels and a demand key of their own."""
    settings = pod_settings(redis_server)
    return await start_gateway(instance_id="pod-a", **settings), await start_gateway(instance_id="pod-b", **settings)


@pytest.fixture
def process_pods(start_process: GatewayFactory, redis_server: RedisServer) -> tuple[Gateway, Gateway]:
    """The same as `realtime serve` processes: one is killed without a word."""
    settings = pod_settings(redis_server)
    return start_process(instance_id="pod-a", **settings), start_process(instance_id="pod-b", **settings)


# GET /api/v1/assets

async def test_assets_lists_catalog_with_latest_tick(gateway: InProcessGateway) -> None:
    status, body = await http_json(gateway.url + "/api/v1/assets")
    assert status == 401 and body["error"]["code"] == "AUTH_REQUIRED"

    status, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("alice")))
    assert status == 200
    assert [(a["name"], a["decimals"], a["price"]) for a in body["assets"]] == [
        (BTC, 4, None), (ETH, 4, None), (SOL, 2, None)]

    await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"],
                  {"asset": BTC, "bid": 10, "ask": 11, "seq": 7, "ts": 1_700_000_000_000})

    async def btc_priced() -> bool:
        _, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("alice")))
        return bool(body["assets"][0]["price"])
    await eventually(btc_priced, timeout=10)
    _, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("alice")))
    assert body["assets"][0]["price"] == {"asset": BTC, "bid": 10, "ask": 11, "decimals": 4, "seq": 7,
                                          "ts": 1_700_000_000_000}
    # A token restricted to other assets sees the catalog but not this price.
    _, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer(token("eve", assets=[ETH])))
    assert [a["price"] for a in body["assets"]] == [None, None, None]
    status, body = await http_json(gateway.url + "/api/v1/assets", headers=bearer("garbage"))
    assert status == 401 and body["error"]["code"] == "AUTH_INVALID"


async def test_assets_are_public_when_anonymous_is_allowed(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(allow_anonymous=True)
    status, body = await http_json(gateway.url + "/api/v1/assets")
    assert status == 200 and [a["name"] for a in body["assets"]] == [BTC, ETH, SOL]


# POST /api/v1/publish

async def test_publish_reaches_users_on_every_pod(pods: tuple[InProcessGateway, InProcessGateway]) -> None:
    a, b = pods
    async with connected(b.url, auth={"token": token("42", roles=["risk"])}) as user, \
            connected(a.url, auth={"token": token("7")}) as other:
        await user.call("price:subscribe", [ETH])
        requests: list[dict[str, Any]] = [
            {"event": "order:update", "user": "42", "data": {"id": 1}},
            {"event": "notification", "room": "role:risk", "data": "margin call"},
            {"event": "halt", "room": "asset:eth_usdc_perp"},  # catalog spelling, data optional
        ]
        offsets = []
        for request in requests:
            status, body = await http_json(a.url + "/api/v1/publish", "POST", json=request, headers=SERVICE)
            assert status == 202 and body["ok"] is True, body
            offsets.append(body.get("offset"))
        await user.wait_for("halt", timeout=10)
        await user.wait_for("notification", timeout=10)
        # Private events carry their offset (connection state recovery) as their last argument.
        assert user.received("order:update") == [[{"id": 1}, offsets[0]]]
        assert user.received("notification") == [["margin call", offsets[1]]]
        assert offsets[2] is None
        assert other.events == []
    # Private events through the event log, read by every pod; the asset event through the manager.
    assert sample(await scrape(b.url), "realtime_events_delivered_total") == 2
    assert sample(await scrape(a.url), "realtime_manager_messages_total", direction="out") >= 1
    assert sample(await scrape(b.url), "realtime_manager_messages_total", direction="in") >= 1
    assert sample(await scrape(a.url), "realtime_api_requests_total", route="publish", status="202") == 3


BAD_CREDENTIALS: list[tuple[dict[str, str], int, str]] = [
    ({}, 401, "AUTH_REQUIRED"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "AUTH_REQUIRED"),
    (bearer("garbage"), 401, "AUTH_INVALID"),
    (bearer(token("billing", roles=["service"], ttl=-3600)), 401, "AUTH_EXPIRED"),
    (bearer(token("alice", roles=["trader"])), 403, "FORBIDDEN"),
]
BAD_BODIES: list[tuple[Any, int, str]] = [
    (b"{not json", 400, "BAD_REQUEST"),
    (b"[1, 2]", 400, "BAD_REQUEST"),
    (b"", 400, "BAD_REQUEST"),
    ({"user": "42"}, 400, "BAD_REQUEST"),
    ({"event": "", "user": "42"}, 400, "BAD_REQUEST"),
    ({"event": 5, "user": "42"}, 400, "BAD_REQUEST"),
    ({"event": "e" * 65, "user": "42"}, 400, "BAD_REQUEST"),
    ({"event": "x"}, 400, "BAD_REQUEST"),
    ({"event": "x", "user": "42", "room": "user:42"}, 400, "BAD_REQUEST"),
    ({"event": "x", "user": ""}, 400, "BAD_REQUEST"),
    ({"event": "x", "user": ["42"]}, 400, "BAD_REQUEST"),
    ({"event": "x", "room": "42"}, 400, "BAD_REQUEST"),
    ({"event": "x", "room": "everyone:now"}, 400, "BAD_REQUEST"),
    ({"event": "x", "room": "asset:DOGE"}, 404, "UNKNOWN_ASSET"),
    ({"event": "x", "user": "42", "extra": 1}, 400, "BAD_REQUEST"),
    ({"event": "price:update", "room": "asset:BTC_USDC_PERP", "data": {"bid": 1}}, 403, "FORBIDDEN"),
    ({"event": "auth:expiring", "user": "42"}, 403, "FORBIDDEN"),
    ({"event": "connect", "user": "42"}, 403, "FORBIDDEN"),
    ({"event": "x", "user": "42", "data": "x" * 70_000}, 413, "PAYLOAD_TOO_LARGE"),
]


async def test_publish_rejects_bad_requests(gateway: InProcessGateway) -> None:
    for headers, status, code in BAD_CREDENTIALS:
        got, answer = await http_json(gateway.url + "/api/v1/publish", "POST",
                                      json={"event": "x", "user": "42"}, headers=headers)
        assert got == status and answer["error"]["code"] == code, (headers, answer)
    for body, status, code in BAD_BODIES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        got, answer = await http_json(gateway.url + "/api/v1/publish", "POST", data=raw, headers=SERVICE)
        assert got == status and answer["error"]["code"] == code, (body, answer)
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]


async def test_publish_bounds_a_chunked_body_and_keeps_serving(gateway: InProcessGateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"event": "x", "user": "42", "data": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/api/v1/publish", data=chunks(), headers=SERVICE) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
    status, body = await http_json(gateway.url + "/api/v1/publish", "GET")
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
    status, body = await http_json(gateway.url + "/api/v1/nothing")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body = await http_json(gateway.url + "/api/v1/publish", "POST", json={"event": "x", "user": "42"},
                                   headers=SERVICE)
    assert status == 202


async def test_publish_while_redis_is_down_is_unavailable(start_gateway: InProcessFactory,
                                                          own_redis: RedisServer) -> None:
    gateway = await start_gateway(redis_url=own_redis.url)
    own_redis.stop()
    await eventually(lambda: not gateway.ready(), timeout=30)
    status, body = await http_json(gateway.url + "/api/v1/publish", "POST", json={"event": "x", "user": "42"},
                                   headers=SERVICE)
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
    status, body = await http_json(gateway.url + "/api/v1/demand", headers=SERVICE)
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
    own_redis.start()
    await gateway.wait_ready(60)


# GET /api/v1/demand and the Redis key and message.

async def test_demand_sums_live_pods_and_forgets_dead_ones(process_pods: tuple[Gateway, Gateway],
                                                           redis_server: RedisServer) -> None:
    a, b = process_pods
    key = a.env["REALTIME_DEMAND_KEY"]
    status, body = await http_json(a.url + "/api/v1/demand", headers=bearer(token("alice")))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"

    redis = aioredis.Redis.from_url(redis_server.url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(key)
    try:
        async with connected(a.url, auth={"token": token("alice")}) as alice, \
                connected(b.url, auth={"token": token("bob")}) as bob, \
                connected(b.url, auth={"token": token("carol")}) as carol:
            await alice.call("price:subscribe", [BTC, ETH])
            await bob.call("price:subscribe", [BTC])
            await carol.call("price:subscribe", [BTC])
            expected = {BTC: 3, ETH: 1, SOL: 0}

            async def summed() -> bool:
                status, body = await http_json(b.url + "/api/v1/demand", headers=SERVICE)
                return status == 200 and body["assets"] == expected and body["pods"] == 2
            await eventually(summed, timeout=20)

            # The same sum as a Redis key and as a message on the channel of that name.
            async def stored() -> bool:
                raw = await redis.get(key)
                return raw is not None and json.loads(raw)["assets"] == expected
            await eventually(stored, timeout=20)
            announced = await _next_message(pubsub, lambda m: m["assets"] == expected)
            assert announced["pods"] == 2

        # Clients gone: every count falls to zero.
        async def zero() -> bool:
            _, body = await http_json(a.url + "/api/v1/demand", headers=SERVICE)
            return bool(body["assets"] == {BTC: 0, ETH: 0, SOL: 0})
        await eventually(zero, timeout=20)

        # A pod that dies without a word drops out when its key expires.
        assert b.process is not None
        b.process.kill()
        b.process.wait()

        async def one_pod() -> bool:
            _, body = await http_json(a.url + "/api/v1/demand", headers=SERVICE)
            return bool(body["pods"] == 1)
        await eventually(one_pod, timeout=30)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def _next_message(pubsub: Any, accept: Any, timeout: float = 20) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                body: dict[str, Any] = json.loads(message["data"])
                if accept(body):
                    return body
    return await asyncio.wait_for(wait(), timeout)


async def test_demand_and_publish_in_embedded_mode(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(demand_interval=0.2)
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", [SOL])
        status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE,
                                       json={"event": "notification", "user": "alice", "data": [1, "two"]})
        assert status == 202
        # The data is one argument (a list), then the offset.
        assert await client.wait_for("notification", timeout=10) == [[[1, "two"], body["offset"]]]

        async def counted() -> bool:
            _, body = await http_json(gateway.url + "/api/v1/demand", headers=SERVICE)
            return bool(body["assets"] == {BTC: 0, ETH: 0, SOL: 1} and body["pods"] == 1)
        await eventually(counted, timeout=20)
