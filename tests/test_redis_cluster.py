"""Three pods behind nginx on a real Redis Cluster (three masters, one replica each).

Per-asset price channels and the manager channel are sharded (SPUBLISH /
SSUBSCRIBE); a pod holds the channel of an asset only while one of its
clients watches it; a master killed by SIGKILL is replaced by its replica
and the pods come back by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from realtime.backplane.connections import Subscription, client
from realtime.waits import cancel
from tests.support import (
    ROOT,
    Gateway,
    InProcessFactory,
    Nginx,
    NodeClients,
    Recorder,
    connected,
    eventually,
    free_port,
    http_json,
    launch,
    sample,
    scrape,
    token,
)
from tests.support.recovery import client as recovery_client
from tests.support.recovery import recovered_after_drop
from tests.support.recovery import start as recovery_start
from tests.support.redis_cluster import RedisClusterNodes, own_redis_cluster, redis_cluster

pytestmark = pytest.mark.slow  # a six-node Redis Cluster, and pods behind nginx

__all__ = ["own_redis_cluster", "redis_cluster"]  # fixtures

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"
SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


class Pods:
    def __init__(self, nodes: RedisClusterNodes, gateways: list[Gateway], nginx: Nginx) -> None:
        self.nodes = nodes
        self.gateways = gateways
        self.nginx = nginx
        self.channel = gateways[0].env["REALTIME_PRICE_CHANNEL"]
        self.manager = gateways[0].env["REALTIME_MANAGER_CHANNEL"]

    def asset_channel(self, asset: str) -> str:
        return f"{self.channel}:{asset}"

    def subscribers(self, channel: str) -> int:
        """PUBSUB SHARDNUMSUB on the master that owns the channel: how many pods hold it."""
        reply = self.nodes.command(self.nodes.master_of(channel), "pubsub", "shardnumsub", channel).split()
        return int(reply[1])

    async def spublish(self, ticks: list[dict[str, Any]]) -> None:
        redis = client(self.nodes.url, 2.0)
        try:
            for tick in ticks:
                await redis.spublish(self.asset_channel(tick["asset"]), json.dumps(tick))
        finally:
            await redis.aclose()


@pytest.fixture
def start_pods(tmp_path: Path) -> AsyncIterator[Callable[..., Pods]]:
    """Three `realtime serve` pods on the cluster behind nginx, on the default engine (like `start_cluster`)."""
    started: list[Nginx | Gateway] = []

    def start(nodes: RedisClusterNodes, **settings: Any) -> Pods:
        suffix = str(free_port())
        gateways = [launch(tmp_path, redis_url=nodes.url, price_channel=f"prices-{suffix}", price_channels="per-asset",
                           price_linger=1, manager_channel=f"socketio-{suffix}", redis_retry_max=1,
                           demand_key=f"demand-{suffix}", demand_interval=0.5,
                           max_connections_per_user=5,  # presence in Redis: its admit script on the cluster
                           instance_id=f"pod{i}-{suffix}", **settings) for i in range(3)]
        started.extend(gateways)
        nginx = Nginx([g.port for g in gateways], tmp_path / f"nginx-{suffix}")
        nginx.start()
        started.append(nginx)
        return Pods(nodes, gateways, nginx)

    yield start  # type: ignore[misc]
    for part in reversed(started):
        part.stop()


def ticks(asset: str, seqs: range) -> list[dict[str, Any]]:
    return [{"asset": asset, "bid": 1000 + s, "ask": 1001 + s, "seq": s} for s in seqs]


def seqs(recorder: Recorder, asset: str) -> list[int]:
    return [update["seq"] for update in recorder.received("price:update") if update["asset"] == asset]


async def test_pods_hold_only_the_channels_their_clients_watch(redis_cluster: RedisClusterNodes,
                                                               start_pods: Callable[..., Pods]) -> None:
    pods = start_pods(redis_cluster)
    one, two, three = pods.gateways
    async with connected(one.url, auth={"token": token("alice")}) as a, \
            connected(two.url, auth={"token": token("bob")}) as b, \
            connected(three.url, auth={"token": token("carol")}) as c:
        await a.call("price:subscribe", [BTC])
        await b.call("price:subscribe", [ETH])
        await c.call("price:subscribe", [BTC, ETH])
        # Two pods hold BTC, two hold ETH, none holds SOL: nobody watches it.
        await eventually(lambda: pods.subscribers(pods.asset_channel(BTC)) == 2
                         and pods.subscribers(pods.asset_channel(ETH)) == 2)
        assert pods.subscribers(pods.asset_channel(SOL)) == 0
        # The manager channel is sharded too: one subscription per pod.
        assert pods.subscribers(pods.manager) == 3

        await pods.spublish(ticks(BTC, range(1, 21)) + ticks(ETH, range(1, 21)) + ticks(SOL, range(1, 21)))
        await c.wait_for("price:update", 40, timeout=10)
        await a.wait_for("price:update", 20, timeout=10)
        await b.wait_for("price:update", 20, timeout=10)
        await asyncio.sleep(0.5)  # room for duplicates to show up
        assert seqs(a, BTC) == list(range(1, 21)) and seqs(a, ETH) == []
        assert seqs(b, ETH) == list(range(1, 21)) and seqs(b, BTC) == []
        assert seqs(c, BTC) == list(range(1, 21)) and seqs(c, ETH) == list(range(1, 21))
        assert all(update["asset"] != SOL for r in (a, b, c) for update in r.received("price:update"))

        # The last BTC subscriber of pod one leaves: after the linger, pod one lets the channel go.
        await a.call("price:unsubscribe", [BTC])
        await eventually(lambda: pods.subscribers(pods.asset_channel(BTC)) == 1, timeout=10)

        # Private events go through the event log on the cluster, from whichever pod was asked, each with
        # the offset the API answered as its last argument.
        offsets = []
        for gateway in pods.gateways:
            request = {"event": "order:update", "user": "carol", "data": {"from": gateway.port}}
            status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE, json=request)
            assert status == 202, body
            offsets.append(body["offset"])
        await c.wait_for("order:update", 3, timeout=10)
        await asyncio.sleep(0.5)  # a quiet window: no copy may follow
        assert c.received("order:update") == [[{"from": g.port}, offset] for g, offset in zip(pods.gateways, offsets,
                                                                                              strict=True)]
        assert a.received("order:update") == [] and b.received("order:update") == []

        # Demand sums every pod's counts from the cluster (hash-tagged keys, one MULTI per pod).
        async def demand() -> bool:
            _, body = await http_json(one.url + "/api/v1/demand", headers=SERVICE)
            return bool(body.get("assets") == {BTC: 1, ETH: 2, SOL: 0} and body.get("pods") == 3)
        await eventually(demand, timeout=10)
    for gateway in pods.gateways:
        assert "Traceback" not in gateway.logs() and "unavailable" not in gateway.logs(), gateway.logs()[-2000:]


async def test_every_tick_reaches_each_client_once_through_nginx(redis_cluster: RedisClusterNodes,
                                                                start_pods: Callable[..., Pods]) -> None:
    pods = start_pods(redis_cluster)
    clients = [{"token": token(f"user{i}"), "transports": ["websocket"]} for i in range(9)]
    node = NodeClients("cluster_clients.mjs", json.dumps({"url": pods.nginx.url, "clients": clients,
                                                          "subscribe": [BTC, ETH]}))
    await node.start()
    try:
        await node.wait_until(lambda lines: sum(line["type"] == "ack" for line in lines) == len(clients))
        placement = {line["id"]: line["instance"] for line in node.lines if line["type"] == "ack"}
        holders = len(set(placement.values()))
        await eventually(lambda: pods.subscribers(pods.asset_channel(BTC)) == holders
                         and pods.subscribers(pods.asset_channel(ETH)) == holders)
        await pods.spublish(ticks(BTC, range(1, 31)) + ticks(ETH, range(1, 31)))
        await node.wait_until(lambda lines: sum(line["type"] == "update" for line in lines) >= 60 * len(clients))
        await asyncio.sleep(1.0)
    finally:
        await node.stop()
    got: dict[tuple[int, str], list[int]] = defaultdict(list)
    for line in node.lines:
        if line["type"] == "update":
            got[(line["id"], line["asset"])].append(line["seq"])
    assert {key: value for key, value in got.items() if value != list(range(1, 31))} == {}
    assert len(got) == 2 * len(clients)


async def test_a_killed_master_is_survived(own_redis_cluster: RedisClusterNodes,
                                           start_pods: Callable[..., Pods]) -> None:
    pods = start_pods(own_redis_cluster)
    nodes = pods.nodes
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connected(g.url, auth={"token": token(f"u{i}")}))
                   for i, g in enumerate(pods.gateways)]
        for recorder in clients:
            await recorder.call("price:subscribe", [BTC])
        await eventually(lambda: pods.subscribers(pods.asset_channel(BTC)) == 3)

        # A feed that keeps publishing BTC through the failover, and counts what it got out.
        published: list[int] = []

        async def feed() -> None:
            redis = client(nodes.url, 1.0)
            seq = 0
            try:
                while True:
                    seq += 1
                    with contextlib.suppress(Exception):
                        await redis.spublish(pods.asset_channel(BTC), json.dumps(ticks(BTC, range(seq, seq + 1))[0]))
                        published.append(seq)
                    await asyncio.sleep(0.05)
            finally:
                await redis.aclose()

        task = asyncio.create_task(feed())
        try:
            await eventually(lambda: all(seqs(r, BTC) for r in clients), timeout=10)
            # Kill the master of BTC's channel (the shard every pod needs), as a crash would.
            victim = nodes.master_of(pods.asset_channel(BTC))
            nodes.kill(victim)
            killed = time.monotonic()
            last_before = published[-1] if published else 0

            # Within 15 s every pod is serving again: ready, and receiving ticks published after the kill.
            async def serving() -> bool:
                ready = all(g.ready() for g in pods.gateways)
                fresh = all(any(s > last_before + 1 for s in seqs(r, BTC)) for r in clients)
                return ready and fresh
            await eventually(serving, timeout=15)
            recovered = time.monotonic() - killed
            assert all(g.process is not None and g.process.poll() is None for g in pods.gateways)
            assert victim not in nodes.masters()

            # Nothing but the gap is lost: after recovery every tick arrives, once, in order.
            mark = published[-1]
            await eventually(lambda: all(seqs(r, BTC) and seqs(r, BTC)[-1] >= mark + 20 for r in clients),
                             timeout=10)
        finally:
            await cancel(task)
        for recorder in clients:
            got = seqs(recorder, BTC)
            assert got == sorted(set(got)), "duplicates or reordering"
            assert set([s for s in published if s > mark][:20]) <= set(got)

        # Private events too, through the manager's shard (wherever it lives now).
        status, body = await http_json(pods.gateways[0].url + "/api/v1/publish", "POST", headers=SERVICE,
                                       json={"event": "order:update", "user": "u2", "data": {"id": 1}})
        assert status == 202, body
        await clients[2].wait_for("order:update", timeout=10)
    lost = [len([n for n in published if n <= mark and n not in set(seqs(r, BTC))]) for r in clients]
    print(f"recovered {recovered:.1f}s after the kill; ticks lost per client (the gap): {lost} "
          f"of {len(published)} published at ~20/s")


async def test_a_moved_slot_moves_the_subscription(own_redis_cluster: RedisClusterNodes) -> None:
    """A manual failover demotes the master: Redis sends SUNSUBSCRIBE, the subscription follows the slot."""
    nodes = own_redis_cluster
    subscription = Subscription("test", nodes.url, timeout=1.0, retry_max=0.5, sharded=["prices:BTC"])
    got: list[bytes] = []

    async def read() -> None:
        async for message in subscription.messages():
            got.append(message["data"])

    reader = asyncio.create_task(read())
    redis = client(nodes.url, 1.0)
    try:
        await eventually(lambda: subscription.connected)
        master = nodes.master_of("prices:BTC")
        replica = nodes.replica_of(master)
        nodes.command(replica, "cluster", "failover")
        await eventually(lambda: nodes.master_of("prices:BTC") == replica, timeout=10)
        n = 0

        async def heard_again() -> bool:
            nonlocal n
            n += 1
            with contextlib.suppress(Exception):
                await redis.spublish("prices:BTC", f"after-{n}")
            return bool(got) and got[-1].startswith(b"after-")
        await eventually(heard_again, timeout=10, interval=0.1)
        assert subscription.reconnects >= 1  # more if a node still had the old slot map
        assert nodes.command(replica, "pubsub", "shardnumsub", "prices:BTC").split()[1] == "1"
    finally:
        await cancel(reader)
        await redis.aclose()


# What the recovery store (issue 11) will run on a cluster: one Lua script over keys of one hash tag.
APPEND = """
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'room', ARGV[2], 'data', ARGV[3])
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[1], id, 'room', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], id)
return id
"""


async def test_the_client_factory_runs_the_recovery_stores_commands_on_a_cluster(
        redis_cluster: RedisClusterNodes) -> None:
    p = f"socketio-{free_port()}"
    redis = client(redis_cluster.url, 2.0)
    try:
        append = redis.register_script(APPEND)
        keys = [f"{{{p}}}:log", f"{{{p}}}:room:user:42", f"{{{p}}}:routed"]
        ids = [await append(keys=keys, args=[0, "user:42", f'{{"i":{i}}}', 120_000]) for i in range(4)]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split(b"-"))))
        assert [entry for _, entries in await redis.xread({keys[0]: ids[1]}, block=100) for entry, _ in entries] \
            == ids[2:]
        assert [entry for entry, _ in await redis.xrange(keys[1], min=b"(" + ids[0], max=ids[-1])] == ids[1:]
        assert await redis.xread({keys[0]: ids[-1]}, block=100) == []
        assert 0 < await redis.pttl(keys[1]) <= 120_000
        # Sessions under their own tags, refreshed in one pipeline that spans slots.
        async with redis.pipeline(transaction=False) as pipe:
            for pid in ("a", "b", "c", "d"):
                pipe.hset(f"{p}:session:{{{pid}}}", mapping={"sub": "42", "basis": ids[0]})
                pipe.pexpire(f"{p}:session:{{{pid}}}", 150_000)
            assert await pipe.execute() == [2, True] * 4
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{p}:session:{{a}}", "subscriptions", "[]")
            pipe.pexpire(f"{p}:session:{{a}}", 120_000)
            assert await pipe.execute() == [1, True]
        # The router's lease and consumer group.
        assert await redis.set(f"{p}:router", "pod1", nx=True, px=3000)
        stream = f"{p}:events"
        assert await redis.xgroup_create(stream, "routers", id="0", mkstream=True)
        entry = await redis.xadd(stream, {"event": "order:update", "user": "42", "data": "{}"})
        assert (await redis.xreadgroup("routers", "pod1", {stream: ">"}, count=10))[0][1][0][0] == entry
        assert (await redis.xautoclaim(stream, "routers", "pod2", min_idle_time=0))[1][0][0] == entry
        assert await redis.xack(stream, "routers", entry) == 1
    finally:
        await redis.aclose()


@pytest.mark.parametrize("per_asset", [True, False])
async def test_realtime_feed_on_a_cluster(redis_cluster: RedisClusterNodes, start_gateway: InProcessFactory,
                                          per_asset: bool) -> None:
    """Per-asset: SPUBLISH to sharded channels. Single: PUBLISH, which the cluster broadcasts to every node."""
    suffix = free_port()
    gateway = await start_gateway(redis_url=redis_cluster.url, price_channel=f"prices-{suffix}",
                                  price_channels="per-asset" if per_asset else "single",
                                  manager_channel=f"socketio-{suffix}")
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [SOL])
        if per_asset:
            channel = f"prices-{suffix}:{SOL}"
            await eventually(lambda: int(redis_cluster.command(
                redis_cluster.master_of(channel), "pubsub", "shardnumsub", channel).split()[1]) == 1)
        feed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", "feed", *(["--per-asset"] if per_asset else []), "--rate", "20",
            "--count", "30",
            "--redis-url", redis_cluster.url, "--price-channel", f"prices-{suffix}", cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(feed.communicate(), 30)
        assert feed.returncode == 0, stderr.decode()
        updates = await alice.wait_for("price:update", 10, timeout=10)
        assert {u["asset"] for u in updates} == {SOL}


@pytest.mark.parametrize("per_asset", [True, False])
async def test_by_default_a_pod_on_a_cluster_hears_a_feed_of_either_layout(
        redis_cluster: RedisClusterNodes, start_gateway: InProcessFactory, per_asset: bool) -> None:
    """Issue #18, finding 9: REALTIME_PRICE_CHANNELS left alone, the feed SPUBLISHes per asset (or PUBLISHes)."""
    suffix = free_port()
    channel, sharded = f"prices-{suffix}", f"prices-{suffix}:{SOL}"
    gateway = await start_gateway(redis_url=redis_cluster.url, price_channel=channel,
                                  manager_channel=f"socketio-{suffix}")
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await alice.call("price:subscribe", [SOL])
        await eventually(lambda: int(redis_cluster.command(
            redis_cluster.master_of(sharded), "pubsub", "shardnumsub", sharded).split()[1]) == 1)

        # The pod says what it holds: the single channel and SOL's sharded channel.
        async def holding() -> bool:
            _, health = await http_json(gateway.url + "/health")
            return bool(health["price_channels"] == [channel, sharded])
        await eventually(holding)
        metrics = await scrape(gateway.url)
        assert sample(metrics, "realtime_price_channels_held", layout="single", channel=channel) == 1
        assert sample(metrics, "realtime_price_channels_held", layout="per-asset", channel=sharded) == 1

        feed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", "feed", *(["--per-asset"] if per_asset else []), "--rate", "20",
            "--count", "30", "--redis-url", redis_cluster.url, "--price-channel", channel, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(feed.communicate(), 30)
        assert feed.returncode == 0, stderr.decode()
        updates = await alice.wait_for("price:update", 10, timeout=10)
        assert {u["asset"] for u in updates} == {SOL}
        seqs = [u["seq"] for u in alice.received("price:update")]
        assert seqs == sorted(set(seqs))


async def test_recovery_on_a_cluster(redis_cluster: RedisClusterNodes, start_gateway: InProcessFactory) -> None:
    # The event log, room histories and sessions on a cluster: a dropped client recovers every private event it
    # missed, once and in order, and the latest price (the single price channel is classic pub/sub there).
    suffix = free_port()
    gateway = await start_gateway(redis_url=redis_cluster.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}")
    for seq, how in ((0, "abrupt"), (10, "clean")):
        async with recovery_client(gateway.url, subscribe=[BTC]) as session:
            await recovery_start(session)
            await recovered_after_drop(session, gateway.url, gateway, how=how, seq=seq)
    assert sample(await scrape(gateway.url), "realtime_recoveries_total", outcome="recovered") == 2
