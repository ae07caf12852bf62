"""Real processes for the tests: redis-server, `realtime serve`, node clients.

Nothing here is a fake: each helper starts the real program on a free port
on 127.0.0.1 and stops it when the test is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from realtime.auth import mint_token

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
SECRET = "test-secret-that-is-long-enough-for-hs256"
ASSETS = "BTC_USDC_PERP:4,ETH_USDC_PERP:4,SOL_USDC_PERP:2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def token(sub: str = "alice", *, roles: list[str] | None = None, assets: list[str] | None = None,
          ttl: int = 3600, secret: str = SECRET) -> str:
    return mint_token(secret, sub, roles=roles or [], assets=assets, ttl=ttl)


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


class RedisServer:
    """A real redis-server on a free port, which tests may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: run scripts/setup --test")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="realtime-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@dataclass
class Gateway:
    """A `realtime serve` process."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20, wait_ready: bool = True) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()
        _wait_port(self.port, timeout, self.process)
        if wait_ready:
            self.wait_ready(timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway on {self.port} not ready after {timeout}s:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def gateway_env(port: int, **settings: Any) -> dict[str, str]:
    """Environment for a gateway: the test secret and catalog, plus `settings` as REALTIME_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    env.update({
        "REALTIME_HOST": "127.0.0.1",
        "REALTIME_PORT": str(port),
        "REALTIME_JWT_SECRET": SECRET,
        "REALTIME_ASSETS": ASSETS,
        "REALTIME_SIMULATED_RATE": "0",
        "REALTIME_SHUTDOWN_GRACE": "3",
        "PYTHONUNBUFFERED": "1",
    })
    for key, value in settings.items():
        name = "REALTIME_" + key.upper()
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


async def http_json(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode(errors="replace")


class Recorder:
    """A python-socketio AsyncClient that records every event it receives."""

    def __init__(self, **client_options: Any) -> None:
        self.client = socketio.AsyncClient(reconnection=False, **client_options)
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

        async def record(event: str, *args: Any) -> None:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._changed.set()

        self.client.on("*", record)

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until `count` `event`s have arrived; return all of them."""
        async def until() -> None:
            while len(self.received(event)) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)
        return self.received(event)

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        if not args:
            return await self.client.call(event, timeout=timeout)
        data = args[0] if len(args) == 1 else tuple(args)  # a tuple is sent as several arguments
        return await self.client.call(event, data, timeout=timeout)


@contextlib.asynccontextmanager
async def connected(url: str, *, auth: Any = None, transports: list[str] | None = None,
                    headers: Mapping[str, str] | None = None, query: str = "", **options: Any
                    ) -> AsyncIterator[Recorder]:
    recorder = Recorder(**options)
    await recorder.client.connect(url + (f"?{query}" if query else ""), auth=auth,
                                  transports=transports or ["websocket"], headers=dict(headers or {}),
                                  wait_timeout=10)
    try:
        yield recorder
    finally:
        # python-engineio's polling client waits for its pending long-poll (up to
        # 30 s) before it returns from disconnect; the server side is done at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.client.disconnect(), 2)


async def connect_error(url: str, **kwargs: Any) -> Any:
    """Connect expecting a refusal; return the `err.data` the server sent."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    try:
        await client.connect(url, wait_timeout=10, transports=["websocket"], **kwargs)
    except socketio.exceptions.ConnectionError:
        assert len(errors) == 1, errors
        assert errors[0]["message"] == errors[0]["data"]["code"], errors[0]
        return errors[0]["data"]
    finally:
        await client.disconnect()
    raise AssertionError("the connection was accepted")


async def run_node(script: str, *args: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Run tests/js/<script> with node; return the JSON lines it printed."""
    process = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / script), *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"node {script} exited {process.returncode}: {stderr.decode()[-2000:]}")
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


async def publish(redis_url: str, channel: str, *messages: Any) -> None:
    """Publish feed messages (dicts become JSON; str/bytes go as they are)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        for message in messages:
            raw = message if isinstance(message, (str, bytes)) else json.dumps(message)
            await client.publish(channel, raw)
    finally:
        await client.aclose()


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Wait until `predicate()` (sync or async) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
