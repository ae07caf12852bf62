"""A real Redis Cluster for the tests: three masters with one replica each, on free local ports.

Six `redis-server --cluster-enabled yes` processes joined by
`redis-cli --cluster create --cluster-replicas 1`. A short
`cluster-node-timeout` makes a killed master's replica take over within a
few seconds. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.bench.cluster import free_cluster_port

# Milliseconds without an answer before the cluster counts a node as failed and promotes its replica.
NODE_TIMEOUT_MS = 1000


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port} after {timeout}s")
        time.sleep(0.05)


class RedisClusterNodes:
    """Six redis-server processes forming one cluster; `url` is the gateway's `redis+cluster://` URL."""

    def __init__(self, masters: int = 3) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: run scripts/setup --test")
        self.binary = binary
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        self.ports = [free_cluster_port() for _ in range(masters * 2)]
        self.dir = Path(tempfile.mkdtemp(prefix="realtime-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def node_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.processes[port] = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                 "--dir", str(node_dir), "--loglevel", "warning", "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for port in self.ports:
            wait_port(port, self.processes[port])
        subprocess.run([self.cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        self.wait_healthy()

    def command(self, port: int, *args: str) -> str:
        return subprocess.run([self.cli, "-p", str(port), *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and sees three masters with slots."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # A replica that has not synced yet could never take over: wait for its link too.
                if all("cluster_state:ok" in self.command(port, "cluster", "info") for port in self.live_ports()) \
                        and len(self.masters()) == len(self.ports) // 2 \
                        and all("master_link_status:up" in self.command(port, "info", "replication")
                                for port in self.replicas()):
                    return
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not become healthy")
            time.sleep(0.1)

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Live masters with slots, by port: their slot ranges."""
        masters: dict[int, list[tuple[int, int]]] = {}
        port = self.live_ports()[0]
        for line in self.command(port, "cluster", "nodes").splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "master" in flags and "fail" not in flags and "fail?" not in flags and len(fields) > 8:
                ranges = [tuple(int(x) for x in (r.split("-") * 2)[:2]) for r in fields[8:] if not r.startswith("[")]
                masters[int(fields[1].split(":")[1].split("@")[0])] = [(a, b) for a, b in ranges]
        return masters

    def replicas(self) -> list[int]:
        """Live replicas, by port."""
        lines = self.command(self.live_ports()[0], "cluster", "nodes").splitlines()
        return [int(line.split()[1].split(":")[1].split("@")[0]) for line in lines
                if "slave" in line.split()[2].split(",") and "fail" not in line.split()[2]]

    def replica_of(self, master: int, timeout: float = 10.0) -> int:
        """The port of a live replica of the master on `master`; a new cluster's master may hear of its replica
        a moment after the cluster is up (CI once asked too soon)."""
        master_id = self.command(master, "cluster", "myid").strip()
        deadline = time.monotonic() + timeout
        while True:
            for line in self.command(master, "cluster", "nodes").splitlines():
                fields = line.split()
                if fields[3] == master_id and "fail" not in fields[2]:
                    return int(fields[1].split(":")[1].split("@")[0])
            if time.monotonic() > deadline:
                raise LookupError(f"no live replica of {master} after {timeout:.0f}s")
            time.sleep(0.1)  # the interval between two looks at the cluster's view, not a wait for something

    def master_of(self, key: str) -> int:
        """The port of the live master that owns `key`'s slot."""
        slot = int(self.command(self.live_ports()[0], "cluster", "keyslot", key))
        for port, ranges in self.masters().items():
            if any(a <= slot <= b for a, b in ranges):
                return port
        raise LookupError(f"no master owns slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would (no `cluster failover`: the replica must notice by itself)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """One Redis Cluster for a test module; tests that kill nodes use `own_redis_cluster`."""
    nodes = RedisClusterNodes()
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
def own_redis_cluster() -> Iterator[RedisClusterNodes]:
    """A Redis Cluster this test alone may break."""
    nodes = RedisClusterNodes()
    nodes.start()
    yield nodes
    nodes.stop()
