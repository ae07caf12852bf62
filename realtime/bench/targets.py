"""What the bench measures: a server it starts (gateway, stock, node) or one already running.

Every started server gets a fresh process pinned to the server CPUs, its own
catalog of bench assets, the bench's JWT secret and its own Redis channels,
so targets measured in one run share nothing but the machine and the Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from realtime.bench.cpulimit import limit_cpu, remove
from realtime.bench.fleet import pinned
from realtime.bench.options import TARGETS
from realtime.config import Settings

# The Node server ships in the package; its npm packages are installed beside a copy of it (see ensure_node_server).
NODE_SOURCE = Path(__file__).resolve().parent / "node"
NODE_FILES = ("server.mjs", "package.json", "package-lock.json")
# Written into node_modules once `npm ci` succeeded: the lock file it installed.
NODE_STAMP = ".realtime-installed-lock"


class BenchError(Exception):
    """The bench cannot run as asked (a missing program, a server that does not start)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(url: str, timeout: float, process: subprocess.Popen[bytes] | None, what: str) -> None:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(ready):
        if process is not None and process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready at {url} after {timeout:.0f}s")
        await asyncio.sleep(0.1)


class Process:
    """A child process pinned to some CPUs, logging to a file, stopped with SIGTERM."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None, cpus: Sequence[int],
                 log_path: Path, cwd: Path | None = None, cpu_limit: float | None = None) -> None:
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=cwd, preexec_fn=pinned(cpus))
        self.log_path = log_path
        self.cgroup: Path | None = None
        if cpu_limit is not None:
            try:
                self.cgroup = limit_cpu(self.popen.pid, cpu_limit)
            except OSError as exc:
                self.stop()
                raise BenchError(f"--server-cpu-limit needs a writable cgroup CPU controller (root): {exc}") from None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.cgroup is not None:
            remove(self.cgroup)

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


async def start_redis(cpus: Sequence[int], workdir: Path) -> tuple[Process, str]:
    """A private redis-server on a free port; returns it and its URL."""
    binary = shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (scripts/setup --test installs it)")
    port = free_port()
    process = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", str(workdir), "--loglevel", "warning"],
                      env=None, cpus=cpus, log_path=workdir / "redis.log")
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"redis-server did not start: {process.tail()}")
        await asyncio.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


@dataclass
class Endpoint:
    """Where the clients connect and the ticker publishes, and the server's pid when it is ours."""

    name: str
    host: str
    port: int
    path: str
    secret: str
    redis_url: str
    price_channel: str
    assets: list[str]
    process: Process | None = None
    manager_channel: str = "socketio"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def bench_assets(count: int) -> list[str]:
    return [f"BENCH{i}_USD" for i in range(count)]


def fanout_setting() -> bool:
    """Whether this gateway has REALTIME_FANOUT; before it did, `realtime serve` was the stock path."""
    return "fanout" in Settings.model_fields


def default_node_dir() -> Path:
    """Where the node target is installed unless `--node-dir` says otherwise: the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "realtime" / "bench-node"


def ensure_node_server(node_dir: Path) -> Path:
    """Copy the Node server into `node_dir` and `npm ci` its lock file there, once; return its server.mjs.

    The package itself may be read-only (site-packages), and Node resolves
    imports beside the script, so the script runs from `node_dir`. A lock
    file that changed since the last install installs again; concurrent
    benches wait for each other on a file lock.
    """
    node_dir.mkdir(parents=True, exist_ok=True)
    with (node_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in NODE_FILES:
            source = (NODE_SOURCE / name).read_bytes()
            target = node_dir / name
            if not target.is_file() or target.read_bytes() != source:
                target.write_bytes(source)
        wanted = (NODE_SOURCE / "package-lock.json").read_bytes()
        stamp = node_dir / "node_modules" / NODE_STAMP
        if not stamp.is_file() or stamp.read_bytes() != wanted:
            if shutil.which("npm") is None:
                raise BenchError("the node target needs node and npm (scripts/setup installs them)")
            result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=node_dir,
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BenchError(f"npm ci in {node_dir} failed: {result.stderr.strip()[-500:]}")
            stamp.write_bytes(wanted)
    return node_dir / "server.mjs"


async def start_target(kind: str, *, redis_url: str, assets: list[str], secret: str, cpus: Sequence[int],
                       workdir: Path, node_dir: Path, settings: Mapping[str, str] | None = None,
                       cpu_limit: float | None = None) -> Endpoint:
    """Start a fresh server of `kind` (gateway, stock or node) and wait until it is ready.

    `settings` (REALTIME_* variables) override the defaults, e.g. for pods that share channels; `cpu_limit`
    holds it to that many CPUs (`realtime.bench.cpulimit`).
    """
    port = free_port()
    suffix = f"{kind}-{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    env.update({
        "REALTIME_HOST": "127.0.0.1", "REALTIME_PORT": str(port), "REALTIME_REDIS_URL": redis_url,
        "REALTIME_PRICE_CHANNEL": f"bench-prices-{suffix}", "REALTIME_MANAGER_CHANNEL": f"bench-socketio-{suffix}",
        "REALTIME_ASSETS": ",".join(f"{a}:2" for a in assets), "REALTIME_JWT_SECRET": secret,
        "REALTIME_LOG_LEVEL": "warning", "REALTIME_MAX_CONNECTIONS": "1000000",
        # Every simulated client comes from 127.0.0.1: the per-address connection rate would refuse them.
        "REALTIME_CONNECT_RATE": "0",
    })
    env.update(settings or {})
    if kind == "node":
        command = ["node", str(ensure_node_server(node_dir))]
    elif kind in ("gateway", "stock"):
        if fanout_setting():
            env["REALTIME_FANOUT"] = "direct" if kind == "gateway" else "stock"
        if "engine" in Settings.model_fields:
            env["REALTIME_ENGINE"] = "lean" if kind == "gateway" else "stock"
        command = [sys.executable, "-m", "realtime", "serve"]
    else:
        raise BenchError(f"unknown target {kind!r}; choose from {', '.join(TARGETS)}")
    process = Process(command, env=env, cpus=cpus, log_path=workdir / f"{suffix}.log", cpu_limit=cpu_limit)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}/ready", 60, process.popen, f"{kind} server")
    except BaseException:
        process.stop()
        raise BenchError(f"{kind} server did not start; its log ends with:\n{process.tail()}") from None
    return Endpoint(name=kind, host="127.0.0.1", port=port, path="/socket.io/", secret=secret, redis_url=redis_url,
                    price_channel=env["REALTIME_PRICE_CHANNEL"], assets=assets, process=process,
                    manager_channel=env["REALTIME_MANAGER_CHANNEL"])


def url_target(url: str, settings: Settings) -> Endpoint:
    """A gateway someone else runs: its Redis, channel, secret and catalog come from `settings`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise BenchError(f"--url must be http://host:port, got {url!r}")
    if settings.redis_url is None or settings.embedded:
        raise BenchError("--url needs the gateway's Redis: set REALTIME_REDIS_URL (--redis-url)")
    if settings.jwt_secret is None:
        raise BenchError("--url needs the gateway's HS256 secret: set REALTIME_JWT_SECRET (--jwt-secret)")
    return Endpoint(name="url", host=parts.hostname, port=parts.port or 80, path="/socket.io/",
                    secret=settings.jwt_secret, redis_url=settings.redis_url, price_channel=settings.price_channel,
                    assets=[a.name for a in settings.catalog], manager_channel=settings.manager_channel)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="realtime-bench-"))
