"""One contract for channels and keyed state on every backend: memory:// (embedded), one Redis, a Redis Cluster.

A channel subscription and two states (the user's, a channel's) fed by the
API (and on Redis by the Python emitter), a dropped transport, and a
recovery that replays what was missed: the client ends equal to a fresh
snapshot, with the channel's events once and in order. On Redis, two pods
behind nginx: the API is called on each in turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from realtime.events import offsets
from realtime.events.emitter import Emitter
from realtime.protocol import GatewayError
from tests.support import GatewayFactory, Nginx, RedisServer, free_port
from tests.support.channels import channel_client, publish, write_state
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster

__all__ = ["redis_cluster"]  # fixture


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> str | None:
    """The gateway's REALTIME_REDIS_URL: None (embedded), a Redis, or a Redis Cluster."""
    if request.param == "memory":
        return None
    if request.param == "redis":
        return redis_server.url
    nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    return nodes.url


@pytest.mark.slow  # pods behind nginx, and a Redis Cluster
async def test_channels_and_state_on_every_backend(backend: str | None, start_process: GatewayFactory,
                                                  tmp_path: Path) -> None:
    suffix = free_port()
    manager = f"socketio-{suffix}"
    pods = [start_process(redis_url=backend, price_channel=f"prices-{suffix}", manager_channel=manager,
                          instance_id=f"pod{i}-{suffix}") for i in range(1 if backend is None else 2)]
    nginx = Nginx([pod.port for pod in pods], tmp_path / "nginx") if backend is not None else None
    if nginx is not None:
        nginx.start()
    url = nginx.url if nginx is not None else pods[0].url  # what clients see
    api = pods[0].url  # the API is reached on the pods, not through the edge
    emitter = Emitter(backend, channel=manager) if backend else None
    step = 0

    async def write(owner: dict[str, str], ops: list[dict[str, Any]]) -> None:
        # Through the emitter on Redis every other time, the API otherwise.
        nonlocal step
        step += 1
        if emitter is not None and step % 2:
            await emitter.state("positions", ops, **owner)
        else:
            pod = pods[step // 2 % len(pods)].url
            status, answer = await write_state(pod, {**owner, "name": "positions", "ops": ops})
            assert status == 200, answer

    try:
        async with channel_client(url, "alice", channels=["bot:1"]) as alice:
            assert (await alice.emit("channel:subscribe", {"channel": "bot:1"}))["ok"] is True
            for payload in ({"name": "positions"}, {"name": "positions", "channel": "bot:1"}):
                assert (await alice.emit("state:subscribe", payload))["version"] == 0
            mine, bots = {"user": "alice"}, {"channel": "bot:1"}
            for n in range(1, 4):
                await write(mine, [{"op": "set", "key": f"p{n}", "value": {"qty": n, "profit": "0"}}])
                await write(bots, [{"op": "set", "key": f"b{n}", "value": {"qty": n}}])
                await publish(api, "bot:status", {"n": n}, room="channel:bot:1")
            await alice.wait(lambda: len(alice.events("bot:status")) == 3 and len(alice.events("state:update")) == 6)
            await alice.drop()
            await write(mine, [{"op": "merge", "key": "p1", "changes": {"profit": "12.5", "qty": 1}}])
            await write(bots, [{"op": "delete", "key": "b2"}])
            await publish(api, "bot:status", {"n": 4}, room="channel:bot:1")
            if emitter is not None:
                await emitter.emit("bot:status", {"n": 5}, room="channel:bot:1")
                with pytest.raises(GatewayError):
                    await emitter.state("positions", [{"op": "merge", "key": "p2", "changes": "x"}], user="alice")
            assert (await alice.reconnect())["recovered"] is True
            expected = 5 if emitter is not None else 4
            await alice.wait(lambda: len(alice.events("bot:status")) == expected
                             and len(alice.events("state:update")) == 8)
            statuses = alice.events("bot:status")
            assert [args[0]["n"] for args in statuses] == list(range(1, expected + 1))
            keys = [offsets.key(args[1]) for args in statuses]
            assert keys == sorted(keys)
            merge = alice.events("state:update")[6][0]
            assert merge == {"name": "positions", "version": 4,
                             "ops": [{"op": "merge", "key": "p1", "changes": {"profit": "12.5"}}]}
            kept = await alice.states()
        async with channel_client(url, "alice", channels=["bot:1"]) as fresh:
            for payload, key in (({"name": "positions"}, "/positions"),
                                 ({"name": "positions", "channel": "bot:1"}, "bot:1/positions")):
                ack = await fresh.emit("state:subscribe", payload)
                assert {"version": ack["version"], "items": ack["items"]} == kept[key]
                assert ack["version"] == 4
    finally:
        if emitter is not None:
            await emitter.aclose()
        if nginx is not None:
            nginx.stop()
