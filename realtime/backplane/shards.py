"""Redis Cluster: the client, and sharded pub/sub over one connection per shard.

`REALTIME_REDIS_URL=redis+cluster://[user:password@]host:port[,host:port...]`
names some nodes of the cluster (any of them, masters or replicas); the
client finds the rest. List several: a fresh client that finds none of them
alive cannot start.

Why not redis-py's own `ClusterPubSub` (8.1 has SSUBSCRIBE): its
`get_sharded_message(timeout)` polls one shard connection after the other,
each with the full timeout, so a message on the second shard waits while the
first one is quiet. `ShardedPubSub` reads every shard connection in its own
task into one queue instead, and offers the few `PubSub` methods
`Subscription` and `Liveness` use. Failover is handled the simple way: a
shard connection that fails (the master died, or Redis moved a slot away and
sent SUNSUBSCRIBE) fails the whole `ShardedPubSub`, and `Subscription`
reconnects with a fresh cluster client, which re-reads the slot map and so
finds the promoted replica. The gap is the pod's only loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.backplane.liveness import Liveness
from realtime.waits import cancel

SCHEME = "redis+cluster"
# Messages read from the shards but not yet taken by the consumer; beyond it the shard readers wait.
QUEUE = 10_000


class ShardMoved(RedisConnectionError):
    """A shard connection stopped carrying a channel we want (failover, slot migration)."""


def is_cluster(url: str) -> bool:
    return url.lower().startswith(f"{SCHEME}://")


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The `(host, port)` seeds, user name and password of a `redis+cluster://` URL."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    seeds = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port in {SCHEME}:// URL, got {item!r}")
        seeds.append((host.strip("[]"), int(port)))
    return seeds, unquote(user) or None, unquote(password) or None


def cluster_client(url: str, timeout: float) -> RedisCluster:
    """A cluster client whose every call gives up after `timeout` seconds, as on one Redis.

    redis-py's default retries a failed call up to three times with backoff
    (a SIGSTOPped master cost a call 3 × the timeout); without it the call
    fails at once, MOVED/ASK redirects are still followed, and the next call
    re-reads the slot map, so callers (which all retry later) find a promoted
    replica by themselves.
    """
    seeds, user, password = cluster_nodes(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        username=user,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=max(1.0, timeout),
        retry=Retry(NoBackoff(), 0),
    )


class ShardedPubSub:
    """Pub/sub on a Redis Cluster: each channel on a connection to the master that owns its slot.

    Sharded channels (`ssubscribe`) must be read where their slot lives;
    classic channels (`subscribe`) are broadcast by the cluster to every
    node, so any connection does: we use the owner of the channel name's slot,
    which spreads them over the shards. Messages of all connections come out
    of `get_message` in the order each connection delivered them.
    """

    def __init__(self, cluster: RedisCluster, timeout: float) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._links: dict[str, PubSub] = {}
        self._clients: list[aioredis.Redis] = []
        self._readers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._sharded: set[bytes] = set()  # the sharded channels we asked for and not dropped
        self._dropping: Counter[bytes] = Counter()  # our SUNSUBSCRIBEs not confirmed yet, by channel
        self._failure: BaseException | None = None

    async def connect(self) -> None:
        """Read the slot map (raises while no seed answers)."""
        await self.cluster.initialize()

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            await (await self._link(channel)).subscribe(channel)

    async def ssubscribe(self, *channels: str) -> None:
        # One SSUBSCRIBE per channel: a command may only name channels of one slot.
        for channel in channels:
            self._sharded.add(channel.encode())
            await (await self._link(channel)).ssubscribe(channel)

    async def sunsubscribe(self, *channels: str) -> None:
        for channel in channels:
            self._sharded.discard(channel.encode())
            self._dropping[channel.encode()] += 1
            await (await self._link(channel)).sunsubscribe(channel)

    async def get_message(self, ignore_subscribe_messages: bool = False,
                          timeout: float | None = 0.0) -> dict[str, Any] | None:
        """The next message of any shard, or None after `timeout`; raises what failed a shard."""
        if self._failure is not None:
            raise self._failure
        try:
            return self._queue.get_nowait()  # the hot path: no timer when messages are waiting
        except asyncio.QueueEmpty:
            pass
        try:
            # asyncio.timeout, not wait_for: no task per message when the queue runs dry between ticks.
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            if self._failure is not None:
                raise self._failure from None
            return None

    async def ping(self) -> None:
        """Each shard connection watches itself; this proves the cluster answers when none is open."""
        await self.cluster.ping()
        self._queue.put_nowait({"type": "pong", "channel": None, "data": b""})

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # each has ended when `cancel` returns or raises what one raised
            await cancel(*self._readers)
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.aclose()  # type: ignore[no-untyped-call]
        for redis in self._clients:
            with contextlib.suppress(Exception):
                await redis.aclose()
        with contextlib.suppress(Exception):
            await self.cluster.aclose()

    async def _link(self, channel: str) -> PubSub:
        """The connection to the master of `channel`'s slot, opened (and read) on first use."""
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise RedisConnectionError(f"no node owns the slot of {channel!r}")
        link = self._links.get(node.name)
        if link is None:
            kwargs = node.connection_kwargs
            redis = aioredis.Redis(host=node.host, port=int(node.port), username=kwargs.get("username"),
                                   password=kwargs.get("password"), socket_timeout=self.timeout,
                                   socket_connect_timeout=self.timeout,
                                   health_check_interval=max(1, round(self.timeout)),
                                   # No silent reconnects to a dead master: fail, and re-read the slot map.
                                   retry=Retry(NoBackoff(), 0))
            self._clients.append(redis)
            link = self._links[node.name] = redis.pubsub()
            await link.connect()  # type: ignore[no-untyped-call]
            self._readers.append(asyncio.create_task(self._read(node.name, link), name=f"shard {node.name}"))
        return link

    async def _read(self, name: str, link: PubSub) -> None:
        liveness = Liveness(link, self.timeout)
        try:
            while True:
                message = await liveness.next_message()
                if message is None:
                    continue
                kind = message["type"]
                if kind == "sunsubscribe":
                    channel = message["channel"]
                    if self._dropping[channel] > 0:
                        self._dropping[channel] -= 1  # ours (even if the channel was wanted again since)
                    elif channel in self._sharded:
                        raise ShardMoved(f"{name} dropped {channel!r}: its slot moved")
                if kind in ("message", "smessage", "pong"):
                    await self._queue.put(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, who decides
            self._failure = exc
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait({"type": "failure", "channel": None, "data": b""})
