"""The send path (realtime/send/, realtime/engine/writer.py) against a real gateway.

Order is checked on the wire with `RawClient`, which sees frames exactly as
they arrive; the other clients are the real python-socketio and
socket.io-client ones.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support import (
    BTC,
    ETH,
    InProcessFactory,
    RawClient,
    RedisServer,
    backend,
    connected,
    publish_ticks,
    run_node,
    seqs,
    served_on_redis,
    token,
)


async def test_order_against_acks_pings_and_private_events(start_gateway: InProcessFactory,
                                                           redis_server: RedisServer) -> None:
    # event_rate=0: the subscribes below flood on purpose (100/s), to interleave acks with ticks.
    gateway = await served_on_redis(start_gateway, redis_server, ping_interval=0.5, event_rate=0)
    client = await RawClient.connect(gateway.url, {"token": token("alice")})
    # It asked for permessage-deflate: shared frames need it refused (REALTIME_WEBSOCKET_COMPRESSION=false).
    assert "permessage-deflate" not in client.handshake.lower()
    assert (await client.call("price:subscribe", [BTC]))["subscribed"] == [BTC]
    ticks, orders = 3000, 100
    seen: list[tuple[str, Any]] = []  # ("tick", seq) / ("ack", snapshot seq) / ("order", n), in wire order

    async def private_events() -> None:
        async with backend(gateway) as manager:
            for n in range(1, orders + 1):
                await manager.emit("order:update", {"n": n}, room="user:alice", namespace="/")
                await asyncio.sleep(0.02)  # pacing, so that they interleave with ticks; not a wait

    async def acks() -> None:
        # A subscribe that changes nothing: its ack carries the latest seq the handler saw.
        while True:
            client.emit("price:subscribe", [BTC])
            await asyncio.sleep(0.01)  # pacing, so that they interleave with ticks; not a wait

    async def read() -> None:
        while not (("tick", ticks) in seen and ("order", orders) in seen):
            packet = await client.receive()
            if packet.kind == "event" and packet.name == "price:update":
                seen.append(("tick", packet.args[0]["seq"]))
            elif packet.kind == "event" and packet.name == "order:update":
                seen.append(("order", packet.args[0]["n"]))
            elif packet.kind == "ack":
                prices = packet.args[0]["prices"]
                seen.append(("ack", prices[0]["seq"] if prices else 0))

    work = [asyncio.create_task(job) for job in
            (publish_ticks(gateway, [BTC], ticks, every=0.005, burst=20), private_events(), acks())]
    try:
        await asyncio.wait_for(read(), 60)
    finally:
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        await client.close()

    tick_seqs = [value for kind, value in seen if kind == "tick"]
    assert tick_seqs == sorted(set(tick_seqs)) and tick_seqs[-1] == ticks
    assert [value for kind, value in seen if kind == "order"] == list(range(1, orders + 1))
    assert client.pings > 0
    snapshots = [(position, value) for position, (kind, value) in enumerate(seen) if kind == "ack"]
    assert len(snapshots) > 10
    for position, snapshot in snapshots:
        # Every tick the handler had seen was sent before its ack, every later one after it.
        before = [value for kind, value in seen[:position] if kind == "tick"]
        after = [value for kind, value in seen[position:] if kind == "tick"]
        assert all(seq <= snapshot for seq in before), (position, snapshot, before[-3:])
        assert all(seq > snapshot for seq in after), (position, snapshot, after[:3])
        assert snapshot == 0 or snapshot in before


async def test_polling_and_upgrading_clients_get_every_tick_in_order(start_gateway: InProcessFactory,
                                                                     redis_server: RedisServer) -> None:
    # A generous bound: nothing is collapsed, so every tick must arrive.
    gateway = await served_on_redis(start_gateway, redis_server, slow_consumer_bytes=8 * 2**20,
                                    slow_consumer_max_bytes=64 * 2**20)
    async with connected(gateway.url, auth={"token": token("alice")}, transports=["polling"]) as polling, \
            connected(gateway.url, auth={"token": token("bob")}) as websocket:
        for client in (polling, websocket):
            await client.call("price:subscribe", [BTC])
        publisher = asyncio.create_task(publish_ticks(gateway, [BTC], 400, every=0.01))
        # socket.io-client starts on polling and upgrades to websocket while ticks flow.
        upgrading = await run_node("client.mjs", f'{{"url": "{gateway.url}", "auth": {{"token": "{token("carol")}"}}, '
                                                 f'"transports": ["polling", "websocket"], "subscribe": ["{BTC}"], '
                                                 '"updates": 150, "timeoutMs": 30000}', timeout=40)
        await publisher
        for client in (polling, websocket):
            await client.wait_for("price:update", 400, timeout=30)
            assert seqs(client.received("price:update")) == list(range(1, 401))
    # (Its connect event may already come after the upgrade: the probe is quick.)
    received = seqs([line["update"] for line in upgrading if line["type"] == "update"])
    assert len(received) == 150 and received == list(range(received[0], received[0] + 150))


@pytest.mark.parametrize(("serializer", "fanout", "transport"), [
    ("json", "direct", "websocket"), ("json", "direct", "polling"),
    ("msgpack", "direct", "websocket"), ("msgpack", "direct", "polling"),
    ("json", "stock", "websocket"),
])
async def test_serializers_binary_attachments_and_stock_fanout(start_gateway: InProcessFactory,
                                                               redis_server: RedisServer,
                                                               serializer: str, fanout: str, transport: str) -> None:
    gateway = await served_on_redis(start_gateway, redis_server, serializer=serializer, fanout=fanout)
    blob = bytes(range(256)) * 4
    client_serializer = "msgpack" if serializer == "msgpack" else "default"
    async with connected(gateway.url, auth={"token": token("alice")}, serializer=client_serializer,
                         transports=[transport]) as client:
        await client.call("price:subscribe", [BTC, ETH])
        publisher = asyncio.create_task(publish_ticks(gateway, [BTC, ETH], 100, every=0.005))
        async with backend(gateway) as manager:
            await manager.emit("portfolio:update", {"statement": blob}, room="user:alice", namespace="/")
        await publisher
        await client.wait_for("price:update", 200, timeout=30)
        await client.wait_for("portfolio:update")
    updates = client.received("price:update")
    assert seqs(updates, BTC) == list(range(1, 101)) and seqs(updates, ETH) == list(range(1, 101))
    assert client.received("portfolio:update") == [{"statement": blob}]


async def test_ticks_during_an_upgrade_arrive_once_and_in_order(start_gateway: InProcessFactory,
                                                                redis_server: RedisServer) -> None:
    """Engine.IO's upgrade by hand: polling, probe, a pause while ticks flow, then UPGRADE."""
    gateway = await served_on_redis(start_gateway, redis_server, slow_consumer_bytes=8 * 2**20,
                                    slow_consumer_max_bytes=64 * 2**20)
    endpoint = gateway.url + "/socket.io/?EIO=4&transport=polling"
    received: list[int] = []

    def take(body: str) -> bool:
        """Record the ticks in one long-poll response; True when it ends with NOOP (probe answered)."""
        packets = body.split("\x1e")
        for packet in packets:
            if packet.startswith('42["price:update"'):
                received.append(json.loads(packet[2:])[1]["seq"])
        return "6" in packets

    async with aiohttp.ClientSession() as session:
        async with session.get(endpoint) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        polling = f"{endpoint}&sid={sid}"
        for packet in ("40" + json.dumps({"token": token("alice")}), '421["price:subscribe",["BTC_USDC_PERP"]]'):
            async with session.post(polling, data=packet) as response:
                assert response.status == 200
        publisher = asyncio.create_task(publish_ticks(gateway, [BTC], 300, every=0.01))
        async with session.get(polling) as response:  # CONNECT and the ack
            take(await response.text())
        while len(received) < 20:
            async with session.get(polling) as response:
                take(await response.text())
        ws_url = gateway.url.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str("2probe")
            assert (await ws.receive(timeout=10)).data == "3probe"
            done = False
            while not done:  # the server ends the pending poll with NOOP
                async with session.get(polling) as response:
                    done = take(await response.text())
            before_pause = len(received)
            # Staying mid-upgrade while ticks flow (they are held in the queue): the scenario, not a wait.
            await asyncio.sleep(0.3)
            await ws.send_str("5")
            while not received or received[-1] < 300:
                message = await ws.receive(timeout=10)
                if message.data == "2":
                    await ws.send_str("3")
                else:
                    take(message.data)
        await publisher
    assert received == list(range(received[0], 301)), received
    assert len(received) > before_pause
