"""A private Redis Cluster for the bench: three masters with one replica each, on the generator's CPUs."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from realtime.bench.targets import BenchError, Process

MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = random.randrange(20_000, 45_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


async def start_redis_cluster(cpus: Sequence[int], workdir: Path) -> tuple[list[Process], str]:
    """Six redis-server processes joined into a cluster; returns them and the `redis+cluster://` URL."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise BenchError("redis-server and redis-cli are not installed (scripts/setup --test installs them)")
    ports = [free_cluster_port() for _ in range(2 * MASTERS)]
    nodes = []
    for port in ports:
        nodes.append(Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                              "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                              "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                              "--repl-diskless-sync-delay", "0", "--dir", str(workdir), "--loglevel", "warning"],
                             env=None, cpus=cpus, log_path=workdir / f"redis-{port}.log"))
    try:
        deadline = time.monotonic() + 10
        for port, node in zip(ports, nodes, strict=True):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if node.popen.poll() is not None or time.monotonic() > deadline:
                        raise BenchError(f"redis-server (cluster node) did not start: {node.tail()}") from None
                    await asyncio.sleep(0.05)
        created = await asyncio.to_thread(
            subprocess.run, [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                             "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise BenchError(f"redis-cli --cluster create failed: {created.stderr[-500:]}")
        while not all("cluster_state:ok" in info for info in [await _cli(cli, p, "cluster", "info") for p in ports]):
            if time.monotonic() > deadline + 30:
                raise BenchError("the bench's Redis Cluster did not become healthy")
            await asyncio.sleep(0.1)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes, "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


async def _cli(cli: str, port: int, *args: str) -> str:
    result = await asyncio.to_thread(subprocess.run, [cli, "-p", str(port), *args], capture_output=True,
                                     text=True, timeout=10)
    return result.stdout
