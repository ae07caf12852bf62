"""Connection state recovery with the stock socket.io-client (node), and durable private events.

Real processes only: redis-server, `realtime serve` pods, nginx, node. Every
case checks the private events a client saw (order, exactly once, offsets),
`socket.recovered`, the restored subscription and the exact latest price.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
import redis.asyncio as aioredis

from realtime.events import offsets
from realtime.events.emitter import Emitter
from tests.support import (
    BTC,
    ClusterFactory,
    InProcessFactory,
    InProcessGateway,
    RawClient,
    RedisServer,
    eventually,
    free_port,
    sample,
    scrape,
    token,
)
from tests.support.recovery import (
    check,
    client,
    count,
    events,
    last_connect,
    prices,
    publish_event,
    recovered_after_drop,
    start,
    tick,
    until,
)


async def test_recovers_on_the_same_pod(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    suffix = free_port()
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}")
    for seq, how in ((0, "abrupt"), (10, "clean")):
        async with client(gateway.url, subscribe=[BTC]) as session:
            await start(session)
            await recovered_after_drop(session, gateway.url, gateway, how=how, seq=seq)
    assert sample(await scrape(gateway.url), "realtime_recoveries_total", outcome="recovered") == 2


async def test_recovers_with_msgpack(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    suffix = free_port()
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", serializer="msgpack")
    async with client(gateway.url, subscribe=[BTC], msgpack=True) as session:
        await start(session)
        await recovered_after_drop(session, gateway.url, gateway, how="abrupt", seq=30)


async def test_recovers_over_polling(gateway: InProcessGateway) -> None:
    async with client(gateway.url, subscribe=[BTC], transports=["polling"]) as session:
        await start(session)
        await recovered_after_drop(session, gateway.url, gateway, how="clean", seq=20)


async def test_recovers_in_embedded_mode(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(redis_url=None, simulated_rate=0)
    async with client(gateway.url) as session:
        await until(session, count("connect"))
        await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        await until(session, events(1))
        await session.send({"cmd": "drop", "hold": True})
        await until(session, count("disconnect"))
        await publish_event(gateway.url, "alice", "order:update", {"n": 2})
        await session.send({"cmd": "reconnect"})
        await until(session, count("connect", recovered=True))
        await until(session, events(2))
        check(session.lines, [1, 2])


@pytest.mark.slow
async def test_recovers_on_another_pod_after_sigkill(start_cluster: ClusterFactory) -> None:
    await _other_pod(start_cluster, signal.SIGKILL)


@pytest.mark.slow
async def test_recovers_on_another_pod_after_a_sigterm_drain(start_cluster: ClusterFactory) -> None:
    await _other_pod(start_cluster, signal.SIGTERM)


async def _other_pod(start_cluster: ClusterFactory, sig: int) -> None:
    cluster = start_cluster(3)
    async with client(cluster.url, subscribe=[BTC]) as session:
        ack = await start(session)
        pod = cluster.pod(ack["instance"])
        other = next(p for p in cluster.pods if p is not pod)
        await tick(other, 1)
        await publish_event(other.url, "alice", "order:update", {"n": 1})
        await until(session, lambda lines: events(1)(lines) and 1 in prices(lines))
        pid = last_connect(session)["pid"]

        pod.signal(sig)
        # The client reconnects by itself (through nginx, to a pod still alive) while events are published.
        for n in (2, 3):
            await publish_event(other.url, "alice", "order:update", {"n": n})
        await tick(other, 2)
        await until(session, count("connect", recovered=True))
        assert last_connect(session)["pid"] == pid
        await publish_event(other.url, "alice", "order:update", {"n": 4})
        await until(session, lambda lines: events(4)(lines) and 2 in prices(lines))
        check(session.lines, [1, 2, 3, 4])
        assert count("ack")(session.lines) == 1
        assert count("connect")(session.lines) == 2


async def test_a_client_that_had_received_nothing_recovers(gateway: InProcessGateway) -> None:
    async with client(gateway.url, subscribe=[BTC]) as session:
        await start(session)
        await session.send({"cmd": "drop", "hold": True})
        await until(session, count("disconnect"))
        await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        await tick(gateway, 7)
        await session.send({"cmd": "reconnect"})
        await until(session, count("connect", recovered=True))
        await until(session, lambda lines: events(1)(lines) and 7 in prices(lines))
        check(session.lines, [1])


async def test_a_quiet_connection_recovers_after_12000_events_to_other_users(gateway: InProcessGateway) -> None:
    async with client(gateway.url, subscribe=[BTC]) as session:
        await start(session)
        await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        await until(session, events(1))
        await session.send({"cmd": "drop", "hold": True})
        await until(session, count("disconnect"))
        async with Emitter(gateway.env["REALTIME_REDIS_URL"], channel=gateway.env["REALTIME_MANAGER_CHANNEL"]) as em:
            for batch in range(120):
                await asyncio.gather(*(em.emit("order:update", {"n": -1}, user=f"user{batch}-{i}")
                                       for i in range(100)))
            await em.emit("order:update", {"n": 2}, user="alice")
        await tick(gateway, 5)
        await session.send({"cmd": "reconnect"})
        await until(session, count("connect", recovered=True))
        await until(session, lambda lines: events(2)(lines) and 5 in prices(lines))
        await publish_event(gateway.url, "alice", "order:update", {"n": 3})
        await until(session, events(3))
        check(session.lines, [1, 2, 3])


async def test_two_drops_in_a_row(gateway: InProcessGateway) -> None:
    async with client(gateway.url, subscribe=[BTC]) as session:
        await start(session)
        n = 0
        for drop in range(2):
            n += 1
            await publish_event(gateway.url, "alice", "order:update", {"n": n})
            await until(session, events(n))
            await session.send({"cmd": "drop", "hold": True})
            await until(session, lambda lines, drops=drop + 1: count("disconnect")(lines) == drops)
            n += 1
            await publish_event(gateway.url, "alice", "order:update", {"n": n})
            await tick(gateway, n)
            await session.send({"cmd": "reconnect"})
            await until(session, lambda lines, drops=drop + 1: count("connect", recovered=True)(lines) == drops)
            await until(session, lambda lines, n=n: events(n)(lines) and n in prices(lines))
        check(session.lines, [1, 2, 3, 4])
        assert len({line["pid"] for line in session.lines if line["type"] == "connect"}) == 1


async def test_another_users_pid_gets_a_fresh_session(gateway: InProcessGateway) -> None:
    async with client(gateway.url, subscribe=[BTC]) as session:
        await start(session)
        await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        await until(session, events(1))
        pid = last_connect(session)["pid"]
        await session.send({"cmd": "drop", "hold": True})
        await until(session, count("disconnect"))
        await publish_event(gateway.url, "alice", "order:update", {"n": 2})
        # The same socket.io-client (so alice's pid and offset) comes back with mallory's token.
        await session.send({"cmd": "token", "token": token("mallory")})
        await session.send({"cmd": "reconnect"})
        await until(session, count("connect", recovered=False, count=2))
        assert last_connect(session)["pid"] not in (None, pid)
        await until(session, lambda lines: count("ack")(lines) == 2)  # not recovered: it subscribes again
        await publish_event(gateway.url, "mallory", "order:update", {"n": 100})
        await until(session, events(2))
        check(session.lines, [1, 100])  # nothing of alice's after the switch
    assert sample(await scrape(gateway.url), "realtime_recoveries_total", outcome="foreign") == 1


async def test_beyond_the_window_the_session_is_fresh(start_gateway: InProcessFactory,
                                                      redis_server: RedisServer) -> None:
    suffix = free_port()
    channel = f"socketio-{suffix}"
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}", manager_channel=channel,
                                  recovery_window=3)
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        async with client(gateway.url, subscribe=[BTC]) as session:
            await start(session)
            pid = last_connect(session)["pid"]
            await session.send({"cmd": "drop", "hold": True})
            await until(session, count("disconnect"))
            await publish_event(gateway.url, "alice", "order:update", {"n": 1})
            await eventually(_gone(redis, f"{channel}:session:{{{pid}}}"), timeout=15)
            await session.send({"cmd": "reconnect"})
            await until(session, count("connect", count=2))
            assert last_connect(session)["recovered"] is False and last_connect(session)["pid"] != pid
            await until(session, lambda lines: count("ack")(lines) == 2)
            await publish_event(gateway.url, "alice", "order:update", {"n": 2})
            await until(session, events(1))
            check(session.lines, [2])
    finally:
        await redis.aclose()
    assert sample(await scrape(gateway.url), "realtime_recoveries_total", outcome="expired") == 1


def _gone(redis: aioredis.Redis, key: str) -> Any:
    async def gone() -> bool:
        return not await redis.exists(key)
    return gone


async def test_recovers_while_the_server_still_holds_the_old_connection(gateway: InProcessGateway) -> None:
    """A half-open connection the server has not noticed yet: "missed" is everything after the offset."""
    auth = {"token": token("alice")}
    old = await RawClient.connect(gateway.url, auth)
    try:
        pid = old.connect_data["pid"]
        first = await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        packet = await old.receive()
        assert (packet.name, packet.args) == ("order:update", [{"n": 1}, first])
        # The old connection stops reading (the phone left the Wi-Fi); the server still holds it.
        for n in (2, 3):
            await publish_event(gateway.url, "alice", "order:update", {"n": n})
        new = await RawClient.connect(gateway.url, {**auth, "pid": pid, "offset": first})
        try:
            assert new.connect_data["pid"] == pid
            await publish_event(gateway.url, "alice", "order:update", {"n": 4})
            got = [await new.receive() for _ in range(3)]
            assert [(p.name, p.args[0]["n"]) for p in got] == [("order:update", n) for n in (2, 3, 4)]
            keys = [offsets.key(p.args[1]) for p in got]
            assert keys == sorted(keys) and keys[0] > offsets.key(first)
        finally:
            await new.close()
    finally:
        await old.close()
