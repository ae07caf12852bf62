"""Demand: how many clients watch each asset, across all pods.

python-socketio keeps rooms per process (it declined cluster-wide room counts,
its PR #979), so every pod writes its own counts to a store every
`REALTIME_DEMAND_INTERVAL` seconds, and readers sum the pods still alive. The
upstream poller uses the sum to stop polling what nobody watches.

The store is chosen by URL. `memory://` (embedded mode) knows this process
only. `redis://` keeps, under the prefix `<namespace>:demand` (`REALTIME_DEMAND_KEY`,
`realtime:demand`, unless `REALTIME_NAMESPACE` is set; see `realtime.namespace`):

- `{<prefix>}:pod:<instance>`: hash asset -> this pod's subscribers, expiring
  after three intervals, so a pod that dies drops out on its own;
- `{<prefix>}:pods`: sorted set of instance ids scored by their last write, the
  index readers follow (trimmed of pods older than the expiry); the hash tag
  keeps these in one Redis Cluster slot, so a pod writes them in one MULTI;
- `<prefix>`: the summed `DemandReport` as JSON, rewritten by every pod every
  interval with the same expiry, and PUBLISHed on the channel `<prefix>`
  whenever the sum a pod computes differs from the one it last published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import orjson
from redis.typing import EncodableT, FieldT

from realtime.backplane.connections import REDIS_ERRORS, client
from realtime.catalog import Catalog
from realtime.protocol import DemandReport

logger = logging.getLogger(__name__)

# A pod's counts outlive it by this many intervals: one missed write is not death.
EXPIRY_INTERVALS = 3


class DemandUnavailable(Exception):
    """The store cannot be read or written right now (Redis down)."""


class DemandStore(Protocol):
    async def put(self, instance: str, counts: Mapping[str, int]) -> None:
        """Record this pod's subscribers per asset."""
        ...

    async def remove(self, instance: str) -> None:
        """Forget this pod at once (graceful shutdown)."""
        ...

    async def pods(self) -> dict[str, dict[str, int]]:
        """The counts of every live pod, by instance id."""
        ...

    async def announce(self, report: DemandReport, changed: bool) -> None:
        """Make the sum available to consumers that do not call the HTTP API."""
        ...

    async def aclose(self) -> None: ...


class MemoryDemandStore:
    """Embedded mode: this process is the whole cluster."""

    def __init__(self) -> None:
        self._pods: dict[str, dict[str, int]] = {}

    async def put(self, instance: str, counts: Mapping[str, int]) -> None:
        self._pods[instance] = dict(counts)

    async def remove(self, instance: str) -> None:
        self._pods.pop(instance, None)

    async def pods(self) -> dict[str, dict[str, int]]:
        return {instance: dict(counts) for instance, counts in self._pods.items()}

    async def announce(self, report: DemandReport, changed: bool) -> None:
        return None  # nobody outside the process to tell

    async def aclose(self) -> None:
        return None


class RedisDemandStore:
    """Per-pod hashes with an expiry, an index of pods, and the published sum."""

    def __init__(self, url: str, prefix: str, ttl: float, timeout: float) -> None:
        self.client = client(url, timeout)
        self.prefix = prefix
        self.index = f"{{{prefix}}}:pods"
        self.ttl = max(1, round(ttl))

    def _pod_key(self, instance: str) -> str:
        return f"{{{self.prefix}}}:pod:{instance}"

    async def put(self, instance: str, counts: Mapping[str, int]) -> None:
        key = self._pod_key(instance)
        fields: dict[FieldT, EncodableT] = {asset: count for asset, count in counts.items()}
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)  # assets that left the catalog must not linger
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self.ttl)
                pipe.zadd(self.index, {instance: time.time()})
                pipe.expire(self.index, self.ttl)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DemandUnavailable(exc.__class__.__name__) from None

    async def remove(self, instance: str) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._pod_key(instance))
                pipe.zrem(self.index, instance)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DemandUnavailable(exc.__class__.__name__) from None

    async def pods(self) -> dict[str, dict[str, int]]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(self.index, "-inf", time.time() - self.ttl)
                pipe.zrange(self.index, 0, -1)
                _, members = await pipe.execute()
            instances = [member.decode() for member in members]
            async with self.client.pipeline(transaction=False) as pipe:
                for instance in instances:
                    pipe.hgetall(self._pod_key(instance))
                hashes = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DemandUnavailable(exc.__class__.__name__) from None
        # A pod whose hash expired is dead even if the index still names it.
        return {instance: _counts(fields) for instance, fields in zip(instances, hashes, strict=True) if fields}

    async def announce(self, report: DemandReport, changed: bool) -> None:
        message = orjson.dumps(report)
        try:
            # Not one pipeline: a Redis Cluster refuses PUBLISH in a pipeline (and the sum changes rarely).
            await self.client.set(self.prefix, message, ex=self.ttl)
            if changed:
                await self.client.publish(self.prefix, message)
        except REDIS_ERRORS as exc:
            raise DemandUnavailable(exc.__class__.__name__) from None

    async def aclose(self) -> None:
        await self.client.aclose()


def _counts(fields: dict[bytes, bytes]) -> dict[str, int]:
    # Someone else's writes to our keys must not break the sum: skip what is not a count.
    return {field.decode(errors="replace"): int(value) for field, value in fields.items() if value.isdigit()}


class Demand:
    """Writes this pod's counts periodically and sums every pod's on request."""

    def __init__(self, store: DemandStore, catalog: Catalog, instance_id: str,
                 local: Callable[[], Mapping[str, int]], interval: float) -> None:
        self.store = store
        self.catalog = catalog
        self.instance_id = instance_id
        self.local = local
        self.interval = interval
        # The last sum this pod computed, for /metrics (which must not wait on Redis).
        self.latest: dict[str, int] = {}
        self._announced: dict[str, int] | None = None

    async def report(self) -> DemandReport:
        """Subscribers per catalog asset across all live pods. Raises `DemandUnavailable`."""
        pods = await self.store.pods()
        assets = dict.fromkeys(self.catalog.names, 0)
        for counts in pods.values():
            for asset, count in counts.items():
                if asset in assets:
                    assets[asset] += count
        return {"assets": assets, "pods": len(pods), "ts": int(time.time() * 1000)}

    async def refresh(self) -> DemandReport:
        """Write this pod's counts, then read and announce the sum."""
        await self.store.put(self.instance_id, self.local())
        report = await self.report()
        changed = report["assets"] != self._announced
        await self.store.announce(report, changed)
        self._announced = self.latest = report["assets"]
        return report

    async def run(self) -> None:
        """Refresh every interval until cancelled; a store outage is logged and retried."""
        while True:
            try:
                await self.refresh()
            except DemandUnavailable as exc:
                logger.warning("demand: store unavailable (%s); retrying every %.1fs", exc, self.interval)
            except Exception:  # the demand signal must never take the gateway down with it
                logger.exception("demand: refresh failed")
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Withdraw this pod's counts, so the sum drops at once rather than at expiry."""
        try:
            await self.store.remove(self.instance_id)
        except DemandUnavailable:
            pass  # the expiry removes them anyway
        await self.store.aclose()
