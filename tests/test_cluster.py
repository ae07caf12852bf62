"""Several pods behind Debian's nginx with docker/nginx.conf (SPEC §7): real processes only."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support import (
    BTC,
    Cluster,
    ClusterFactory,
    backend_emit,
    connected,
    eventually,
    node_clients,
    of,
    publish,
    token,
)

pytestmark = pytest.mark.slow  # pods behind nginx


async def test_clients_spread_and_receive_everything_exactly_once(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(3)
    # Bob on websocket and on polling only; others on websocket: all through nginx.
    clients = ([{"token": token("bob"), "transports": ["websocket"]} for _ in range(5)]
               + [{"token": token("bob"), "transports": ["polling"]} for _ in range(5)]
               + [{"token": token(f"user{i}"), "transports": ["websocket"]} for i in range(6)])
    bob = range(10)
    async with node_clients(cluster.url, clients, [BTC]) as node:
        await node.wait_until(lambda lines: len(of(lines, "ack")) == len(clients))
        acks = of(node.lines, "ack")
        assert all(ack["subscribed"] == [BTC] for ack in acks)
        placement = {ack["id"]: ack["instance"] for ack in acks}
        assert len(set(placement.values())) > 1, placement
        assert len({placement[i] for i in bob}) > 1, placement

        # Every tick reaches every client once, whichever pod it is on.
        await publish(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"],
                      *[{"asset": BTC, "bid": 100 + s, "ask": 101 + s, "seq": s} for s in range(1, 31)])
        await node.wait_until(lambda lines: len(of(lines, "update")) >= 30 * len(clients))

        # A back end's write-only emit to user:bob reaches each of bob's connections once, on every pod.
        await backend_emit(cluster.redis.url, cluster.env["REALTIME_MANAGER_CHANNEL"], "order:update",
                           {"id": 7}, room="user:bob")
        await node.wait_until(lambda lines: len(of(lines, "event")) >= len(bob))
        # A quiet second for duplicates to show up: what is checked below is that nothing
        # more arrives, which no condition can signal; not a wait for something.
        await asyncio.sleep(1.0)

    seqs: dict[int, list[int]] = defaultdict(list)
    for line in of(node.lines, "update"):
        seqs[line["id"]].append(line["seq"])
    assert all(seqs[i] == list(range(1, 31)) for i in range(len(clients))), seqs
    events = Counter(line["id"] for line in of(node.lines, "event") if line["event"] == "order:update")
    assert events == Counter(bob), events
    # Polling clients stayed on their pod for every request (stickiness) and on polling.
    assert Counter(line["id"] for line in of(node.lines, "connect")) == Counter(range(len(clients)))
    assert of(node.lines, "disconnect") == [] and of(node.lines, "connect_error") == []
    assert {line["transport"] for line in of(node.lines, "connect") if line["id"] in range(5, 10)} == {"polling"}


async def test_python_polling_client_through_nginx(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(3)
    # Several sessions, each of many polling requests: each must stay on its pod.
    for _ in range(4):
        async with connected(cluster.url, auth={"token": token("carol")}, transports=["polling"],
                             sticky=True) as client:
            ack = await client.call("price:subscribe", [BTC])
            assert ack["ok"] is True
            await publish(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"],
                          {"asset": BTC, "bid": 1, "ask": 2})
            await client.wait_for("price:update", timeout=10)
            assert (await client.call("price:unsubscribe", [BTC]))["ok"] is True


async def test_per_user_cap_closes_the_oldest_on_any_pod(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(2, max_connections_per_user=2)
    first, second = cluster.pods
    alice = {"token": token("alice")}
    async with connected(second.url, auth=alice) as oldest, connected(first.url, auth=alice) as middle:
        await middle.call("price:subscribe", [BTC])
        async with connected(first.url, auth=alice) as newest:
            # The oldest, on the other pod, is told why and disconnected for good.
            reasons = await oldest.wait_for("session:closed", timeout=10)
            assert reasons[0]["code"] == "TOO_MANY_CONNECTIONS"
            await eventually(lambda: not oldest.client.connected, timeout=10)
            assert middle.client.connected and newest.client.connected
            assert middle.received("session:closed") == [] and newest.received("session:closed") == []
            # Another user is not affected.
            async with connected(second.url, auth={"token": token("bob")}) as bob:
                assert bob.client.connected
    # Everyone left: alice's slots are free again.
    await eventually(lambda: _slots(cluster, "alice", expected=0), timeout=10)


async def test_slots_of_a_dead_pod_do_not_leak(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(2, max_connections_per_user=2)
    first, second = cluster.pods
    alice = {"token": token("alice")}
    async with connected(second.url, auth=alice), connected(second.url, auth=alice):
        assert await _slots(cluster, "alice", expected=2)
        assert second.process is not None
        second.process.kill()  # no shutdown: its slots stay in Redis until its heartbeat key expires
        second.process.wait()
    await eventually(lambda: _pod_expired(cluster, second), timeout=40, interval=0.5)
    async with connected(first.url, auth=alice) as one:
        # The dead pod's two slots were pruned, not counted (they would have pushed one out).
        assert await _slots(cluster, "alice", expected=1)
        async with connected(first.url, auth=alice) as two:
            assert await _slots(cluster, "alice", expected=2)
            assert one.client.connected and two.client.connected
            assert one.received("session:closed") == [] and two.received("session:closed") == []


async def _slots(cluster: Cluster, user: str, expected: int) -> bool:
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        key = f"{{{cluster.env['REALTIME_MANAGER_CHANNEL']}:presence}}:user:{user}"
        return bool(await client.zcard(key) == expected)
    finally:
        await client.aclose()


async def _pod_expired(cluster: Cluster, pod: Any) -> bool:
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        pattern = f"{{{cluster.env['REALTIME_MANAGER_CHANNEL']}:presence}}:pod:{pod.env['REALTIME_INSTANCE_ID']}:*"
        return not [key async for key in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()
