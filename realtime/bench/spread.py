"""The `assets` scenario: many assets spread over several pods, one price channel or one per asset.

Each gateway pod serves a different slice of the catalog (one client per
pod watches its slice), while the ticker publishes every asset at the same
rate. With the single channel every pod receives and validates every tick
and delivers a fraction of them; with per-asset channels a pod receives only
what its clients watch. Per pod: feed messages received from Redis per
second and the pod's CPU; and Redis's own CPU, for both layouts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio.cluster import RedisCluster

from realtime.backplane.connections import Client, client
from realtime.bench.cluster import start_redis_cluster
from realtime.bench.fleet import Fleet
from realtime.bench.options import Options
from realtime.bench.sampling import CpuWindow
from realtime.bench.targets import BenchError, Endpoint, bench_assets, free_port, start_target
from realtime.bench.ticker import Ticker

# `REALTIME_PRICE_CHANNELS` of each run, and whether it runs on a Redis Cluster (sharded channels).
IDLE_SECONDS = 2.0
LAYOUTS = {"single": ("single", False), "per-asset": ("per-asset", False), "cluster": ("per-asset", True)}


async def spread(fleet: Fleet, options: Options, *, redis_url: str, redis_pid: int | None, cpus: Sequence[int],
                 generator_cpus: Sequence[int], workdir: Path, node_dir: Path) -> dict[str, Any]:
    """Each layout, one after the other, on fresh pods; the figures of each."""
    assets = bench_assets(options.spread_assets)
    results: dict[str, Any] = {"assets": len(assets), "pods": options.spread_pods,
                               "ticks_per_s": options.spread_rate, "seconds": options.spread_seconds}
    for name, (layout, on_cluster) in LAYOUTS.items():
        if not on_cluster:
            results[name] = await _layout(layout, fleet, options, assets, redis_url=redis_url,
                                          redis_pids=[redis_pid] if redis_pid is not None else [], cpus=cpus,
                                          workdir=workdir, node_dir=node_dir)
            continue
        nodes, cluster_url = await start_redis_cluster(generator_cpus, workdir)
        try:
            results[name] = await _layout(layout, fleet, options, assets, redis_url=cluster_url,
                                          redis_pids=[node.pid for node in nodes], cpus=cpus, workdir=workdir,
                                          node_dir=node_dir)
        finally:
            for node in nodes:
                node.stop()
    return results


async def _layout(layout: str, fleet: Fleet, options: Options, assets: list[str], *, redis_url: str,
                  redis_pids: list[int], cpus: Sequence[int], workdir: Path, node_dir: Path) -> dict[str, Any]:
    suffix = free_port()
    channel = f"bench-spread-{suffix}"
    secret = secrets.token_urlsafe(32)
    settings = {"REALTIME_PRICE_CHANNEL": channel, "REALTIME_MANAGER_CHANNEL": f"bench-spread-socketio-{suffix}",
                "REALTIME_PRICE_CHANNELS": layout, "REALTIME_PRICE_LINGER": "60",
                "REALTIME_MAX_SUBSCRIPTIONS": str(len(assets))}
    pods: list[Endpoint] = []
    ticker = Ticker(redis_url, channel, assets, per_asset=layout == "per-asset")
    try:
        for _ in range(options.spread_pods):
            pods.append(await start_target("gateway", redis_url=redis_url, assets=assets, secret=secret, cpus=cpus,
                                           workdir=workdir, node_dir=node_dir, settings=settings))
        # Pod k's one client watches the k-th slice of the catalog.
        slices = [assets[k::len(pods)] for k in range(len(pods))]
        for k, (pod, chosen) in enumerate(zip(pods, slices, strict=True)):
            outcome = await fleet.connect(host=pod.host, port=pod.port, path=pod.path, secret=secret, first=k,
                                          count=1, assets=chosen, per_client=len(chosen), concurrency=1)
            if outcome.connected != 1:
                raise BenchError(f"spread: the client of pod {k} did not connect: {outcome.errors}")
        if layout == "per-asset":
            await _until_subscribed(redis_url, [f"{channel}:{asset}" for asset in assets])

        # Each pod's CPU while nothing is published (timers, demand, presence): subtracted per message below.
        windows = [CpuWindow(pod.pid) for pod in pods if pod.pid is not None]
        for window in windows:
            window.start()
        await asyncio.sleep(IDLE_SECONDS)
        idle = [window.stop().cpu_pct for window in windows]
        before = [await _feed_messages(pod) for pod in pods]
        redis = [CpuWindow(pid) for pid in redis_pids]
        for window in [*windows, *redis]:
            window.start()
        started = time.monotonic()
        await fleet.reset(time.time_ns() // 1000)
        published = await ticker.run(options.spread_rate, options.spread_seconds)
        elapsed = time.monotonic() - started
        usages = [window.stop() for window in windows]
        redis_usage = [window.stop() for window in redis]
        # What each pod should have heard: everything (single channel) or its slice (per-asset).
        expected = [sum(published.values()) if layout == "single" else sum(published[a] for a in chosen)
                    for chosen in slices]
        deadline = time.monotonic() + options.drain_seconds
        while True:
            after = [await _feed_messages(pod) for pod in pods]
            heard = [a - b for a, b in zip(after, before, strict=True)]
            if all(h >= e for h, e in zip(heard, expected, strict=True)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        delivered = (await fleet.received()).histogram.count
    finally:
        await fleet.close_clients()
        await ticker.close()
        for pod in pods:
            pod.stop()
    per_pod = []
    for k, usage in enumerate(usages):
        received = after[k] - before[k]
        per_pod.append({"pod": k, "watched_assets": len(slices[k]), "received": received, "expected": expected[k],
                        "received_per_s": round(received / elapsed, 1),
                        "cpu_pct": round(usage.cpu_pct, 1), "idle_cpu_pct": round(idle[k], 1),
                        "cpu_us_per_received": round(max(0.0, usage.cpu_pct - idle[k]) / 100 * elapsed * 1e6
                                                     / received, 1) if received else None})
    return {"published": sum(published.values()), "published_per_s": round(sum(published.values()) / elapsed, 1),
            "delivered": delivered, "pods": per_pod,
            "pods_cpu_pct": round(sum(u.cpu_pct for u in usages), 1),
            # Every Redis process: one, or the cluster's masters and replicas (replicas get sharded messages too).
            "redis_cpu_pct": round(sum(u.cpu_pct for u in redis_usage), 1) if redis_usage else None,
            "redis_cpu_pct_each": [round(u.cpu_pct, 1) for u in redis_usage]}


async def _feed_messages(pod: Endpoint) -> int:
    """The pod's `realtime_feed_messages_total`, every outcome: what it received from Redis."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://{pod.host}:{pod.port}/metrics") as response:
        text = await response.text()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("realtime_feed_messages_total{")))


async def _until_subscribed(redis_url: str, channels: list[str], timeout: float = 30) -> None:
    """Until every per-asset channel has its pod (the pods subscribe when their client does)."""
    redis = client(redis_url, 5.0)
    deadline = time.monotonic() + timeout
    try:
        if isinstance(redis, RedisCluster):
            await redis.initialize()  # the slot map, for `get_node_from_key`
        while True:
            if all(count >= 1 for _, count in await _subscribers(redis, channels)):
                return
            if time.monotonic() > deadline:
                raise BenchError("spread: the pods did not subscribe to their assets' channels in time")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def _subscribers(redis: Client, channels: list[str]) -> list[tuple[bytes | str, int]]:
    """PUBSUB NUMSUB, or on a cluster PUBSUB SHARDNUMSUB on the master of each channel."""
    if not isinstance(redis, RedisCluster):
        return list(await redis.pubsub_numsub(*channels))
    by_node: dict[str, list[str]] = {}
    for channel in channels:
        node = redis.get_node_from_key(channel)
        assert node is not None
        by_node.setdefault(node.name, []).append(channel)
    counts: list[tuple[bytes | str, int]] = []
    for name, some in by_node.items():
        reply = await redis.execute_command("PUBSUB SHARDNUMSUB", *some, target_nodes=redis.get_node(node_name=name))
        counts.extend(reply)
    return counts
