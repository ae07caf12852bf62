"""REALTIME_SERIALIZER=msgpack end to end with node's socket.io-client and socket.io-msgpack-parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import (
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    free_port,
    node_session,
    publish,
    run_node,
    ticking,
    token,
)

ETH = "ETH_USDC_PERP"


@pytest.fixture
async def msgpack_gateway(start_gateway: InProcessFactory, redis_server: RedisServer) -> InProcessGateway:
    suffix = str(free_port())
    return await start_gateway(redis_url=redis_server.url, serializer="msgpack", price_channel=f"prices-{suffix}",
                               manager_channel=f"socketio-{suffix}")


def bursts(asset: str) -> Callable[[int], list[dict[str, Any]]]:
    """Burst n: three ticks of `asset` (bid = seq). Bursts make packets queue up for
    polling clients while websocket clients have already been written the same packets."""
    return lambda n: [{"asset": asset, "bid": s, "ask": s + 2, "seq": s} for s in range(3 * n - 2, 3 * n + 1)]


@pytest.mark.parametrize("fanout", ["direct", "stock"])
async def test_websocket_and_polling_clients_share_a_room(start_gateway: InProcessFactory, redis_server: RedisServer,
                                                          fanout: str) -> None:
    # One room, both transports: every msgpack packet is binary, and the tick
    # packet is shared by all recipients, whichever fan-out sends it.
    suffix = str(free_port())
    msgpack_gateway = await start_gateway(redis_url=redis_server.url, serializer="msgpack", fanout=fanout,
                                          price_channel=f"prices-{suffix}", manager_channel=f"socketio-{suffix}")

    def plan(transport: str) -> str:
        return json.dumps({"url": msgpack_gateway.url, "auth": {"token": token(f"user-{transport}")},
                           "subscribe": [ETH], "updates": 8, "transports": [transport], "msgpack": True,
                           "timeoutMs": 30000})

    async with ticking(msgpack_gateway, bursts(ETH), 0.1):
        runs: list[list[dict[str, Any]]] = await asyncio.gather(
            run_node("client.mjs", plan("websocket"), timeout=60),
            run_node("client.mjs", plan("polling"), timeout=60),
            run_node("client.mjs", plan("websocket"), timeout=60),
            run_node("client.mjs", plan("polling"), timeout=60),
        )
    for lines, transport in zip(runs, ["websocket", "polling"] * 2, strict=True):
        assert lines[0] == {"type": "connect", "transport": transport}
        ack = next(line["ack"] for line in lines if line["type"] == "ack")
        assert ack["ok"] is True and ack["subscribed"] == [ETH]
        updates = [line["update"] for line in lines if line["type"] == "update"]
        assert len(updates) == 8
        assert [u["seq"] for u in updates] == sorted({u["seq"] for u in updates})
        assert all(u == {"asset": ETH, "bid": u["seq"], "ask": u["seq"] + 2, "decimals": 4, "seq": u["seq"],
                         "ts": u["ts"]} for u in updates)
    assert "Traceback" not in msgpack_gateway.logs()


async def test_refusal_reaches_msgpack_client(msgpack_gateway: InProcessGateway) -> None:
    lines = await run_node("client.mjs", json.dumps({"url": msgpack_gateway.url, "auth": {"token": "nope"},
                                                     "msgpack": True}))
    assert lines[0]["type"] == "connect_error" and lines[0]["message"] == "AUTH_INVALID"
    assert lines[0]["data"]["code"] == "AUTH_INVALID"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_server_disconnect_stops_msgpack_client(msgpack_gateway: InProcessGateway, transport: str) -> None:
    plan = {"url": msgpack_gateway.url, "auth": {"token": token("dave")}, "transports": [transport]}
    async with node_session("disconnect.mjs", plan) as node:
        connected = await node.until("connect")
        # What a back end's AsyncRedisManager.disconnect(sid) publishes; the pod
        # holding the sid sends the client a Socket.IO DISCONNECT packet.
        await publish(msgpack_gateway.env["REALTIME_REDIS_URL"], msgpack_gateway.env["REALTIME_MANAGER_CHANNEL"],
                      {"method": "disconnect", "sid": connected["id"], "namespace": "/", "host_id": "backend"})
        gone = await node.until("disconnect")
    # Not "parse error" followed by a reconnect.
    assert gone == {"type": "disconnect", "reason": "io server disconnect", "active": False}
