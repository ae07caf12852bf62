"""Redis connections: one client factory, one reconnecting subscription.

Every Redis use of the gateway (feed, manager, presence, demand, publisher)
gets its client from `client()`, so timeouts are the same everywhere: a hung
Redis costs at most `REALTIME_REDIS_TIMEOUT` per call, never redis-py's
default of waiting forever. Pub/sub listeners use `Subscription`, which
reconnects with a jittered, capped backoff, checks that a quiet connection is
alive (`Liveness`), logs one line when Redis goes and one when it returns,
and counts reconnects for `/metrics`.

`redis+cluster://host:port[,host:port...]` selects a Redis Cluster
(`realtime.backplane.shards`): `client()` is then a `RedisCluster`, and a
`Subscription`'s sharded channels use SSUBSCRIBE on the shard that owns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisClusterException
from redis.utils import HIREDIS_AVAILABLE

from realtime.backplane.liveness import Liveness
from realtime.backplane.shards import ShardedPubSub, cluster_client, is_cluster
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# What redis-py raises when Redis is down, hung or restarting (on a cluster also when no node
# answers or a slot has no master: `RedisClusterException` is not a `RedisError`).
REDIS_ERRORS: tuple[type[BaseException], ...] = (aioredis.RedisError, RedisClusterException, OSError, TimeoutError)

# A client of one Redis or of a Redis Cluster: both take the same commands on cluster-safe keys.
Client = aioredis.Redis | RedisCluster


def client(url: str, timeout: float, *, bounded_reads: bool = True) -> Client:
    """A Redis (or Redis Cluster) client whose every call gives up after `timeout` seconds.

    With `bounded_reads=False` (one Redis) only connecting is bounded here: the
    caller bounds each call as a whole (`batch.Pipelined`). redis-py arms a
    timer for every reply it reads, ~3.5 µs each, which a pipeline of a
    thousand session writes does not need a thousand times.
    """
    if is_cluster(url):
        return cluster_client(url, timeout)
    redis = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout if bounded_reads else None,
        socket_connect_timeout=timeout,
        health_check_interval=max(1.0, timeout),
    )
    if HIREDIS_AVAILABLE:
        # The URL chose the connection class (TCP, TLS, unix socket): the same, packing with hiredis.
        pool = redis.connection_pool
        pool.connection_class = type(pool.connection_class.__name__, (HiredisPacking, pool.connection_class), {})
    return redis


async def _close(pubsub: PubSub | ShardedPubSub, redis: aioredis.Redis | None) -> None:
    """Close a subscription and its client, whatever either raises."""
    with contextlib.suppress(*REDIS_ERRORS):
        await pubsub.aclose()
    if redis is not None:
        with contextlib.suppress(*REDIS_ERRORS):
            await redis.aclose()


class HiredisPacking:
    """Commands packed by hiredis, as redis-py's own synchronous client does.

    redis-py's asyncio connection packs in Python, ~4.8 µs for a session's
    HSET; hiredis's packer writes the same bytes (and refuses the same
    arguments, as `DataError`) in ~1 µs. redis-py's own wrapper
    (`HiredisRespSerializer`) first copies every argument list to turn
    bytearrays and memoryviews into bytes, which hiredis refuses: here only
    a list hiredis refused is copied.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])  # "CONFIG GET": two words, as redis-py sends it
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            packed: list[bytes] = self._packer.pack(*args)  # bytes for views, else redis-py's DataError
            return packed


def pipeline(redis: Client, scripts: Sequence[Any] = ()) -> Any:
    """A non-transactional pipeline of `redis`, or its stand-in on a Redis Cluster.

    redis-py's cluster pipeline refuses scripts (EVALSHA), which the event log
    and the sessions run in pipelines; on a cluster, `SequentialPipeline` takes
    the same calls and runs them one by one at `execute()`, each routed by its
    own key's slot. `scripts` are the registered scripts it may meet.
    """
    if isinstance(redis, RedisCluster):
        return SequentialPipeline(redis, scripts)
    return redis.pipeline(transaction=False)


class _Queued:
    """What a queued call returns: awaiting it (as redis-py's Script does) yields nothing yet."""

    def __await__(self) -> Any:
        return iter(())


class SequentialPipeline:
    """The calls of a pipeline, run in order at `execute()` against a cluster client."""

    def __init__(self, redis: RedisCluster, scripts: Sequence[Any]) -> None:
        self._redis = redis
        self._scripts: dict[str, str] = {script.sha: script.script for script in scripts}
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., _Queued]:
        def queue(*args: Any, **kwargs: Any) -> _Queued:
            self._calls.append((name, args, kwargs))
            return _Queued()
        return queue

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        calls, self._calls = self._calls, []
        results: list[Any] = []
        for name, args, kwargs in calls:
            if name == "evalsha" and args[0] in self._scripts:
                # EVAL with the text: no NOSCRIPT on a node (a promoted replica) that never loaded it.
                name, args = "eval", (self._scripts[args[0]], *args[1:])
            try:
                results.append(await getattr(self._redis, name)(*args, **kwargs))
            except REDIS_ERRORS as exc:
                if raise_on_error:
                    raise
                results.append(exc)
        return results

    async def __aenter__(self) -> SequentialPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._calls = []


class Backoff:
    """Delays between half and all of min(cap, base * 2**n) seconds; `reset()` after a success.

    Jitter keeps a fleet of pods from reconnecting to a restarted Redis in
    lock-step; the cap bounds how long a recovered Redis goes unused.
    """

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class Subscription:
    """Messages of some pub/sub channels, across Redis outages, until cancelled.

    `component` names the listener in logs and metrics (`feed`, `manager`).
    `channels` are classic channels, for the life of the subscription.
    `sharded` channels are SSUBSCRIBEd on a Redis Cluster (each on the shard
    that owns it) and classic on one Redis; `want()` changes them at any
    time. `on_up` runs after every (re)subscription, e.g. to log what was lost.
    """

    def __init__(self, component: str, url: str, channels: Sequence[str] = (), *, timeout: float,
                 retry_max: float, sharded: Iterable[str] = (),
                 on_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.component = component
        self.url = url
        self.channels = list(channels)
        self.timeout = timeout
        self.backoff = Backoff(cap=retry_max)
        self.on_up = on_up
        self.connected = False
        self.reconnects = 0
        self.cluster = is_cluster(url)
        self._wanted: set[str] = set(sharded)
        self._active: set[str] = set()  # sharded channels subscribed on the live connection
        self._changed = asyncio.Event()
        self._sync_failure: BaseException | None = None

    @property
    def sharded(self) -> frozenset[str]:
        """The sharded channels wanted now (subscribed, or to be once Redis answers)."""
        return frozenset(self._wanted)

    @property
    def held(self) -> list[str]:
        """The channels subscribed on the live connection now (none while Redis is away)."""
        return [*self.channels, *sorted(self._active)] if self.connected else []

    def want(self, channels: Iterable[str]) -> None:
        """Make the sharded channels `channels`; applied in the background, in one go per change burst."""
        self._wanted = set(channels)
        self._changed.set()

    async def messages(self) -> AsyncGenerator[dict[str, Any], None]:
        """Each published message as redis-py gives it (`type`, `channel`, `data`)."""
        while True:
            pubsub, redis = self._open()
            syncer: asyncio.Task[None] | None = None
            try:
                await pubsub.connect()
                if self.channels:
                    await pubsub.subscribe(*self.channels)
                await self._sync(pubsub)
                if self.backoff.attempts:
                    self.reconnects += 1
                    logger.info("%s: subscribed to %s again", self.component, self._describe())
                self.connected = True
                self.backoff.reset()
                syncer = asyncio.create_task(self._keep_in_sync(pubsub), name=f"{self.component} channels")
                if self.on_up is not None:
                    await self.on_up()
                liveness = Liveness(pubsub, self.timeout)
                while True:
                    message = await liveness.next_message()
                    if self._sync_failure is not None:
                        raise self._sync_failure
                    if message is not None and message["type"] in ("message", "smessage"):
                        yield message
            except REDIS_ERRORS as exc:
                if self.connected or self.backoff.attempts == 0:
                    logger.warning("%s: Redis unavailable (%s); retrying, every %.1fs at most",
                                self.component, exc.__class__.__name__, self.backoff.cap)
            finally:
                self.connected = False
                self._active.clear()
                self._sync_failure = None
                try:
                    await cancel(syncer)
                finally:
                    # Shielded: a second cancel (`realtime.waits.cancel` repeats one) must not leave a connection
                    # open, its socket leaked until the collector finds it.
                    await asyncio.shield(_close(pubsub, redis))
            # A cancel lost while the connection closed (3.11's wait_for in redis-py, see realtime.waits):
            # this task is still being cancelled (the manager stopping while Redis is away), so end.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.backoff.next_delay())

    def _open(self) -> tuple[PubSub | ShardedPubSub, aioredis.Redis | None]:
        """A pub/sub connection, and on one Redis the client to close with it (ShardedPubSub closes its own)."""
        if self.cluster:
            return ShardedPubSub(cluster_client(self.url, self.timeout), self.timeout), None
        redis = client(self.url, self.timeout)
        assert isinstance(redis, aioredis.Redis)
        return redis.pubsub(ignore_subscribe_messages=True), redis

    async def _sync(self, pubsub: PubSub | ShardedPubSub) -> None:
        """Subscribe what is wanted and not active, unsubscribe the reverse."""
        wanted = set(self._wanted)
        add, drop = sorted(wanted - self._active), sorted(self._active - wanted)
        if isinstance(pubsub, ShardedPubSub):
            if drop:
                await pubsub.sunsubscribe(*drop)
            if add:
                await pubsub.ssubscribe(*add)
        else:
            if drop:
                await pubsub.unsubscribe(*drop)
            if add:
                await pubsub.subscribe(*add)
        self._active = wanted

    async def _keep_in_sync(self, pubsub: PubSub | ShardedPubSub) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._sync(pubsub)
            except REDIS_ERRORS as exc:
                # The reading loop raises it, and the reconnect subscribes everything wanted.
                self._sync_failure = exc
                return

    def _describe(self) -> str:
        names = [*self.channels, *sorted(self._active)[:3]]
        more = len(self._active) - 3
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")
