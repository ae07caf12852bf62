"""Durable private events: the stream router (with a takeover), the API's 503, the emitter, best-effort emits.

Real processes only; the node client and the checks are those of test_recovery.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from realtime.events import offsets
from realtime.events.emitter import Emitter
from tests.support import (
    BTC,
    ClusterFactory,
    Gateway,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    backend_emit,
    connected,
    eventually,
    http_json,
    sample,
    scrape,
    token,
)
from tests.support.recovery import (
    SERVICE,
    check,
    client,
    count,
    events,
    prices,
    publish_event,
    start,
    tick,
    until,
)


@pytest.mark.slow
async def test_stream_entries_reach_an_offline_user_in_order(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(3)
    redis = aioredis.Redis.from_url(cluster.redis.url)
    stream = "realtime:events"
    try:
        async with client(cluster.url, subscribe=[BTC]) as session:
            await start(session)
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": '{"n": 1}'})
            await until(session, events(1))
            await session.send({"cmd": "drop", "hold": True})
            await until(session, count("disconnect"))
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": '{"n": 2}'})
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": "not json"})
            await redis.xadd(stream, {"event": "price:update", "user": "alice", "data": "{}"})
            await redis.xadd(stream, {"event": "order:update", "room": "user:alice", "data": '{"n": 3}'})
            await redis.xadd(stream, {"event": "order:update", "room": "everyone", "data": "{}"})
            await tick(cluster.pods[0], 9)
            await eventually(_routed(cluster.pods, 3), timeout=15)
            await session.send({"cmd": "reconnect"})
            await until(session, count("connect", recovered=True))
            await until(session, lambda lines: events(3)(lines) and 9 in prices(lines))
            assert count("ack")(session.lines) == 1  # the subscription was restored, not asked again
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": '{"n": 4}'})
            await until(session, events(4))
            check(session.lines, [1, 2, 3, 4])
        assert await _stream_total(cluster.pods, "malformed") == 3
        pending: Any = await redis.xpending(stream, cluster.env["REALTIME_MANAGER_CHANNEL"])
        assert pending["pending"] == 0
    finally:
        await redis.delete(stream)
        await redis.aclose()


async def _stream_total(pods: list[Gateway], outcome: str) -> float:
    total = 0.0
    for pod in pods:
        if pod.process is not None and pod.process.poll() is None:
            total += sample(await scrape(pod.url), "realtime_stream_entries_total", outcome=outcome)
    return total


def _routed(pods: list[Gateway], n: int) -> Any:
    async def routed() -> bool:
        return await _stream_total(pods, "routed") >= n
    return routed


@pytest.mark.slow
@pytest.mark.parametrize("fate", ["killed", "woken"])
async def test_a_router_stopped_while_holding_entries_is_taken_over(start_cluster: ClusterFactory, fate: str) -> None:
    """A router stopped mid-routing, then killed (or woken up after another took over): exactly once, in order."""
    cluster = start_cluster(3)
    redis = aioredis.Redis.from_url(cluster.redis.url)
    stream = "realtime:events"
    channel = cluster.env["REALTIME_MANAGER_CHANNEL"]
    try:
        await eventually(lambda: redis.get(f"{{{channel}}}:router"), timeout=15)
        lease: Any = await redis.get(f"{{{channel}}}:router")
        holder = lease.decode()
        router = cluster.pod(holder)
        other = next(p for p in cluster.pods if p is not router)
        async with client(other.url) as session:
            await until(session, count("connect"))
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": '{"n": 1}'})
            await until(session, events(1))
            # Stop the router while its blocking read is pending, so Redis hands it entries it can
            # neither route nor acknowledge (caught between two reads, it is resumed and stopped again).
            n = 1

            async def held() -> bool:
                pending: Any = await redis.xpending(stream, channel)
                return bool(pending["pending"] >= 1)
            for _ in range(20):
                router.signal(signal.SIGSTOP)
                n += 1
                await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": f'{{"n": {n}}}'})
                with contextlib.suppress(AssertionError):
                    await eventually(held, timeout=1)
                    break
                router.signal(signal.SIGCONT)
                await until(session, events(n))
            else:
                raise AssertionError("the router was never caught holding an entry")
            for _ in range(4):
                n += 1
                await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": f'{{"n": {n}}}'})
            if fate == "killed":
                router.signal(signal.SIGKILL)
                router.process.wait()  # type: ignore[union-attr]
            else:
                async def taken_over() -> bool:
                    lease: Any = await redis.get(f"{{{channel}}}:router")
                    return lease is not None and lease.decode() != holder
                await eventually(taken_over, timeout=15)
                await until(session, events(n), timeout=30)
                router.signal(signal.SIGCONT)  # it wakes up with what it read while stopped
                for _ in range(3):
                    n += 1
                    await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": f'{{"n": {n}}}'})
            await until(session, events(n), timeout=30)
            n += 1
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": f'{{"n": {n}}}'})
            await until(session, events(n))
            check(session.lines, list(range(1, n + 1)))
            lease = await redis.get(f"{{{channel}}}:router")
            assert lease.decode() != holder
    finally:
        await redis.delete(stream)
        await redis.aclose()


@pytest.mark.timing
async def test_publish_answers_503_within_the_timeout_while_redis_is_hung(start_gateway: InProcessFactory,
                                                                          own_redis: RedisServer) -> None:
    gateway = await start_gateway(redis_url=own_redis.url, redis_timeout=1)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        # The bound is the contract: REALTIME_REDIS_TIMEOUT, plus room for the HTTP round trip.
        timeout = aiohttp.ClientTimeout(total=1 + 1.5)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
                gateway.url + "/api/v1/publish", headers=SERVICE, json={"event": "x", "user": "42"}) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "UNAVAILABLE"
    finally:
        own_redis.process.send_signal(signal.SIGCONT)

    # Redis answers again, and so does publishing: a 503 while the pod's connections come back (redis-py
    # reconnects with a backoff), never anything else.
    async def stored() -> bool:
        status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE,
                                       json={"event": "x", "user": "42", "data": None})
        assert status in (202, 503), (status, body)
        return status == 202
    await eventually(stored, timeout=10)


async def test_the_python_emitter_stores_and_delivers(gateway: InProcessGateway) -> None:
    url, channel = gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_MANAGER_CHANNEL"]
    async with connected(gateway.url, auth={"token": token("42")}) as user:
        async with Emitter(url, channel=channel) as emitter:
            first = await emitter.emit("order:update", {"id": 1}, user="42")
            second = await emitter.emit("notice", "hello", room="user:42")
        await user.wait_for("notice")
        assert user.received("order:update") == [[{"id": 1}, first]]
        assert user.received("notice") == [["hello", second]]
        assert offsets.key(first) < offsets.key(second)


async def test_a_string_final_best_effort_emit_gets_a_null(gateway: InProcessGateway) -> None:
    url, channel = gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_MANAGER_CHANNEL"]
    async with connected(gateway.url, auth={"token": token("42")}) as user:
        await backend_emit(url, channel, "notice", "plain text", room="user:42")
        await backend_emit(url, channel, "notice", {"id": 1}, room="user:42")
        await user.wait_for("notice", 2)
        assert user.received("notice") == [["plain text", None], {"id": 1}]


async def test_connected_clients_get_what_was_stored_while_the_reader_was_cut_off(
        start_gateway: InProcessFactory, own_redis: RedisServer) -> None:
    gateway = await start_gateway(redis_url=own_redis.url, redis_timeout=0.5, manager_channel="socketio")
    assert own_redis.process is not None
    async with client(gateway.url) as session:
        await until(session, count("connect"))
        await publish_event(gateway.url, "alice", "order:update", {"n": 1})
        await until(session, events(1))
        # Redis hangs long enough for the log reader to give up its read and back off...
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            async def reader_down() -> bool:
                return sample(await scrape(gateway.url), "realtime_redis_up", component="events") == 0
            await eventually(reader_down, timeout=15)
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        # ...and events are stored the moment it is back, before the reader reads again.
        async with Emitter(own_redis.url, channel=gateway.env["REALTIME_MANAGER_CHANNEL"]) as emitter:
            for n in (2, 3, 4):
                await emitter.emit("order:update", {"n": n}, user="alice")
        await until(session, events(4))
        await publish_event(gateway.url, "alice", "order:update", {"n": 5})
        await until(session, events(5))
        check(session.lines, [1, 2, 3, 4, 5])
        assert count("disconnect")(session.lines) == 0


async def test_with_redis_down_a_connect_is_accepted_without_a_pid(start_gateway: InProcessFactory,
                                                                   own_redis: RedisServer) -> None:
    gateway = await start_gateway(redis_url=own_redis.url, redis_timeout=0.5)
    async with client(gateway.url) as session:
        await until(session, count("connect"))
        pid = session.lines[0]["pid"]
        assert pid
        await session.send({"cmd": "drop", "hold": True})
        await until(session, count("disconnect"))
        own_redis.stop()
        try:
            # Asks to recover: Redis cannot say, so a connection without a pid (recovered false).
            await session.send({"cmd": "reconnect"})
            await until(session, count("connect", count=2))
            assert session.lines[-1]["type"] == "connect" and session.lines[-1]["pid"] is None
            assert session.lines[-1]["recovered"] is False
        finally:
            own_redis.start()
    samples = await scrape(gateway.url)
    assert sample(samples, "realtime_recoveries_total", outcome="unavailable") == 1


async def test_the_heartbeat_writes_back_sessions_redis_lost(start_gateway: InProcessFactory,
                                                             own_redis: RedisServer) -> None:
    # A 4 s window: the heartbeat runs every second.
    gateway = await start_gateway(redis_url=own_redis.url, manager_channel="socketio", recovery_window=4)
    redis = aioredis.Redis.from_url(own_redis.url)
    try:
        async with client(gateway.url, subscribe=[BTC]) as session:
            await start(session)
            pid = session.lines[0]["pid"]
            await redis.flushall()  # as a Redis restart without persistence, or a failover, would

            async def written_back() -> bool:
                return bool(await redis.hget(f"socketio:session:{{{pid}}}", "subscriptions") == b'["' +
                            BTC.encode() + b'"]')
            await eventually(written_back, timeout=10)
            await session.send({"cmd": "drop", "hold": True})
            await until(session, count("disconnect"))
            await publish_event(gateway.url, "alice", "order:update", {"n": 1})
            await session.send({"cmd": "reconnect"})
            await until(session, count("connect", recovered=True))
            await until(session, events(1))
            check(session.lines, [1])
    finally:
        await redis.aclose()
