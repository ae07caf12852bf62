"""Redis stops while clients are connected, then comes back (SPEC §7): no crash, no restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import pytest
import socketio
from redis.exceptions import RedisError

from realtime.config import Settings
from realtime.engine.manager import RedisManager
from realtime.waits import cancel
from tests.support import (
    BTC,
    Gateway,
    GatewayFactory,
    InProcessFactory,
    Recorder,
    RedisServer,
    backend_emit,
    connected,
    eventually,
    free_port,
    http_json,
    publish,
    token,
)


async def test_pods_ride_out_a_redis_outage(start_process: GatewayFactory, own_redis: RedisServer) -> None:
    suffix = str(free_port())
    channels = {"price_channel": f"prices-{suffix}", "manager_channel": f"socketio-{suffix}"}
    pods = [start_process(redis_url=own_redis.url, **channels) for _ in range(2)]
    async with connected(pods[0].url, auth={"token": token("alice")}) as alice, \
            connected(pods[1].url, auth={"token": token("bob")}, transports=["polling"]) as bob:
        for client in (alice, bob):
            await client.call("price:subscribe", [BTC])
        sids = [alice.client.get_sid(), bob.client.get_sid()]
        logged = [len(pod.logs().splitlines()) for pod in pods]

        # Redis goes away: pods stay up with their clients, and say they are not ready.
        own_redis.stop()
        for pod in pods:
            await eventually(lambda pod=pod: _state(pod, 503, "down"), timeout=15)
        # Still serving what needs no Redis, for several reconnect attempts.
        for _ in range(4):
            await asyncio.sleep(1.5)  # the outage lasting: the scenario, not a wait for something
            for client in (alice, bob):
                assert (await client.call("price:subscribe", [BTC]))["ok"] is True
        assert [alice.client.get_sid(), bob.client.get_sid()] == sids
        assert all(pod.process is not None and pod.process.poll() is None for pod in pods)
        # No error storm: a few lines per pod for the whole outage.
        for pod, before in zip(pods, logged, strict=True):
            outage_lines = pod.logs().splitlines()[before:]
            assert len(outage_lines) <= 6, outage_lines
            assert not any("Traceback" in line or "Cannot publish" in line for line in outage_lines)

        # Redis is back (empty, as after a restart): ticks and private emits flow again by themselves.
        own_redis.start()
        back = time.monotonic()
        published: list[int] = []
        feed = asyncio.create_task(_keep_publishing(own_redis.url, channels["price_channel"], published))
        try:
            for client in (alice, bob):
                await client.wait_for("price:update", timeout=30)
            ticks_after = time.monotonic() - back
            # Ticks Redis accepted before the pods had subscribed again reached nobody.
            lost = [client.received("price:update")[0]["seq"] - published[0] for client in (alice, bob)]
            for sub, client in (("alice", alice), ("bob", bob)):
                async def delivered(sub: str = sub, client: Recorder = client) -> bool:
                    await backend_emit(own_redis.url, channels["manager_channel"], "order:update", {"to": sub},
                                       room=f"user:{sub}")
                    with contextlib.suppress(TimeoutError):
                        await client.wait_for("order:update", timeout=0.2)
                    return bool(client.received("order:update"))
                await eventually(delivered, timeout=30, interval=0.1)
            emits_after = time.monotonic() - back
        finally:
            await _cancel(feed)
        for pod in pods:
            await eventually(lambda pod=pod: _state(pod, 200, "up"), timeout=15)
        assert [alice.client.get_sid(), bob.client.get_sid()] == sids
    print(f"\nRedis restart: ticks again after {ticks_after:.2f} s ({lost} ticks published into the gap), "
          f"private emits after {emits_after:.2f} s")


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait, so the publisher closes its Redis connection before the test ends."""
    await cancel(task)


async def _keep_publishing(url: str, channel: str, published: list[int]) -> None:
    seq = 1000
    while True:
        seq += 1
        try:
            await publish(url, channel, {"asset": BTC, "bid": seq, "ask": seq + 1, "seq": seq})
            published.append(seq)
        except (OSError, RedisError):
            pass  # not up yet
        await asyncio.sleep(0.05)  # pacing the feed, not a wait for something


async def _state(pod: Gateway, ready: int, redis: str) -> bool:
    ready_status, _ = await http_json(pod.url + "/ready")
    _, health = await http_json(pod.url + "/health")
    return bool(ready_status == ready and health["redis"] == redis and health["status"] == "ok")


async def test_emits_while_redis_is_down_are_dropped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    # A manager whose Redis is not there: nothing listens on this port.
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=1)
    manager = RedisManager(settings)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    with caplog.at_level(logging.INFO):
        for i in range(50):
            await sio.emit("order:update", {"id": i}, room="user:bob")
    # The stock manager would try twice per emit and log two errors each.
    assert manager.publish_dropped == 50
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_hung_redis_is_noticed_and_survived(start_gateway: InProcessFactory, own_redis: RedisServer) -> None:
    suffix = str(free_port())
    channel = f"prices-{suffix}"
    pod = await start_gateway(redis_url=own_redis.url, price_channel=channel, manager_channel=f"socketio-{suffix}",
                              redis_timeout=1, max_connections_per_user=5)
    assert own_redis.process is not None
    async with connected(pod.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [BTC])
        # Redis stops answering but keeps its sockets open: only timeouts can tell.
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: _state(pod, 503, "down"), timeout=20)
            assert (await alice.call("price:subscribe", [BTC]))["ok"] is True
            # New connections are still admitted (the per-user cap fails open).
            async with connected(pod.url, auth={"token": token("alice")}) as again:
                assert again.client.connected
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        published: list[int] = []
        feed = asyncio.create_task(_keep_publishing(own_redis.url, channel, published))
        try:
            await alice.wait_for("price:update", timeout=30)
        finally:
            await _cancel(feed)
        await eventually(lambda: _state(pod, 200, "up"), timeout=15)
        assert alice.client.connected
