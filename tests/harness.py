"""Real processes for the tests: redis-server, `realtime serve`, node clients.

Nothing here is a fake: each helper starts the real program on a free port
on 127.0.0.1 and stops it when the test is done.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from realtime.sessions.auth import mint_token

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
    # The program before `extra_args`; docker/Dockerfile's CMD runs the console script instead.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "realtime", "serve"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20, wait_ready: bool = True) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, *self.extra_args],
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


def launch(log_dir: Path, *args: str, **settings: Any) -> Gateway:
    """Start `realtime serve` on a free port with REALTIME_* `settings`; the caller stops it."""
    port = free_port()
    gateway = Gateway(port=port, env=gateway_env(port, **settings), log_path=log_dir / f"gateway-{port}.log",
                      extra_args=list(args))
    gateway.start()
    return gateway


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
    # The whole suite runs on either websocket engine: `REALTIME_TEST_ENGINE=stock scripts/test`.
    if os.environ.get("REALTIME_TEST_ENGINE"):
        env["REALTIME_ENGINE"] = os.environ["REALTIME_TEST_ENGINE"]
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

        async def disconnected(reason: Any = None) -> None:
            self.events.append(("disconnect", reason))
            self._changed.set()

        self.client.on("*", record)
        self.client.on("disconnect", disconnected)

    def names(self) -> list[str]:
        """The names of the events received so far, in order ("disconnect" included)."""
        return [name for name, _ in self.events]

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
                    headers: Mapping[str, str] | None = None, query: str = "", sticky: bool = False,
                    **options: Any) -> AsyncIterator[Recorder]:
    """A connected Recorder; `sticky` keeps cookies (nginx's affinity cookie) as a browser does."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) if sticky else None
    if session is not None:
        options["http_session"] = session
    recorder = Recorder(**options)
    try:
        async with _connected(recorder, url, auth, transports, headers, query):
            yield recorder
    finally:
        if session is not None:
            await session.close()


@contextlib.asynccontextmanager
async def _connected(recorder: Recorder, url: str, auth: Any, transports: list[str] | None,
                     headers: Mapping[str, str] | None, query: str) -> AsyncIterator[None]:
    await recorder.client.connect(url + (f"?{query}" if query else ""), auth=auth,
                                  transports=transports or ["websocket"], headers=dict(headers or {}),
                                  wait_timeout=10)
    try:
        yield
    finally:
        # python-engineio's polling client waits for its pending long-poll (up to
        # 30 s) before it returns from disconnect; the server side is done at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.client.disconnect(), 2)


async def connect_error(url: str, *, query: str = "", **kwargs: Any) -> Any:
    """Connect expecting a refusal; return the `err.data` the server sent."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    try:
        await client.connect(url + (f"?{query}" if query else ""), wait_timeout=10, transports=["websocket"],
                             **kwargs)
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


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """`GET /metrics`, parsed: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200, response.status
        text = await response.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.asynccontextmanager
async def ticking(gateway: Gateway, batch: Callable[[int], list[dict[str, Any]]], interval: float
                  ) -> AsyncIterator[None]:
    """While the block runs, publish `batch(n)` to the gateway's feed for n = 1, 2, ... every `interval` s."""
    async def run() -> None:
        n = 0
        while True:
            n += 1
            await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"], *batch(n))
            await asyncio.sleep(interval)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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


async def emitter(redis_url: str, channel: str) -> Any:
    """A back end's write-only python-socketio manager on the gateway's manager channel."""
    return socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def tcp_send_buffer_max() -> int:
    """The most the kernel may buffer on the sending side of one TCP socket."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


@dataclass
class Packet:
    """One thing a `RawClient` saw on the wire, in order."""

    kind: str  # "event", "ack", "ping", "connect", "other"
    name: str = ""
    args: list[Any] = field(default_factory=list)
    id: int | None = None


class RawClient:
    """An Engine.IO v4 / Socket.IO v5 websocket client on a plain TCP socket.

    It sees the frames exactly in wire order and reads only when asked, so a
    test can make it stop reading (with a small receive buffer) like a stalled
    phone. It answers pings while it reads.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: str) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = handshake  # the server's 101 response head
        self.pings = 0
        self._ack_id = 0

    @classmethod
    async def connect(cls, url: str, auth: Any, *, receive_buffer: int | None = None) -> RawClient:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        # A small stream limit too, so asyncio stops reading soon after the test does.
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer or 2**16)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        client = cls(reader, writer, head.decode())
        opened = await client._text()
        assert opened.startswith("0"), opened
        client.send_text("40" + json.dumps(auth))
        connect = await client.receive()
        assert connect.kind == "connect", connect
        return client

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = bytes((0x81, 0x80 | size))
        elif size < 65536:
            header = struct.pack("!BBH", 0x81, 0xFE, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0xFF, size)
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def emit(self, event: str, data: Any) -> int:
        """Send an event that asks for an ack; return the ack id."""
        self._ack_id += 1
        self.send_text(f"42{self._ack_id}" + json.dumps([event, data]))
        return self._ack_id

    async def call(self, event: str, data: Any) -> Any:
        """Send an event and read until its ack (nothing else may arrive before it)."""
        ack_id = self.emit(event, data)
        packet = await self.receive()
        assert packet.kind == "ack" and packet.id == ack_id, packet
        return packet.args[0]

    async def receive(self) -> Packet:
        """The next Socket.IO packet; pings are answered and counted on the way."""
        while True:
            text = await self._text()
            if text == "2":
                self.pings += 1
                self.send_text("3")
                continue
            if not text.startswith("4"):
                return Packet("other", text)
            kind, body = text[1], text[2:]
            digits = len(body) - len(body.lstrip("0123456789"))
            ack_id = int(body[:digits]) if digits else None
            data = json.loads(body[digits:]) if body[digits:] else None
            if kind == "0":
                return Packet("connect", args=[data])
            if kind == "2":
                return Packet("event", data[0], data[1:], ack_id)
            if kind == "3":
                return Packet("ack", args=data, id=ack_id)
            return Packet("other", text)

    async def _text(self) -> str:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(size)
        assert first == 0x81, f"expected a final text frame, got {first:#x}"
        return payload.decode()

    async def closed_by_server(self, timeout: float) -> bool:
        """Read (and discard) until the server ends the connection; False if it never does."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Nginx:
    """Debian's nginx with the project's docker/nginx.conf, in front of `backends` (ports).

    The config is used as shipped; only the pod list (upstreams.conf) and the
    listen port are substituted.
    """

    CONFIG = ROOT / "docker" / "nginx.conf"

    def __init__(self, backends: list[int], directory: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed: run scripts/setup --test")
        self.binary = binary
        self.backends = backends
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self) -> Path:
        text = self.CONFIG.read_text()
        assert text.count("listen 8080;") == 1, "docker/nginx.conf must listen on 8080 exactly once"
        (self.dir / "nginx.conf").write_text(text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};"))
        (self.dir / "upstreams.conf").write_text("".join(f"server 127.0.0.1:{port};\n" for port in self.backends))
        return self.dir / "nginx.conf"

    def start(self) -> None:
        config = self.render()
        log = (self.dir / "stderr.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(config),
             "-g", f"daemon off; pid {self.dir / 'nginx.pid'}; error_log {self.dir / 'error.log'} warn;"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_port(self.port, 10, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.dir / "error.log", self.dir / "stderr.log")
                       if p.exists())


class NodeClients:
    """A long-running node script that prints JSON lines; read while the test acts."""

    def __init__(self, script: str, *args: str) -> None:
        self.script = script
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / self.script), *self.args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            if line.startswith(b"{"):
                self.lines.append(json.loads(line))
                self._changed.set()

    async def wait_until(self, predicate: Any, timeout: float = 30.0) -> None:
        """Wait until `predicate(lines)` is true."""
        async def until() -> None:
            while not predicate(self.lines):
                self._changed.clear()
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"node {self.script} exited; last lines: {self.lines[-5:]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1)
        await asyncio.wait_for(until(), timeout)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def backend_emit(redis_url: str, channel: str, event: str, data: Any, room: str) -> None:
    """Emit as a back-end service does: python-socketio's own write-only Redis manager."""
    manager = socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)
    try:
        await manager.emit(event, data, room=room)
    finally:
        if manager.redis is not None:
            await manager.redis.aclose()


class NodeSession:
    """A tests/js script that runs alongside the test: read its JSON lines as they come, answer on stdin."""

    def __init__(self, process: asyncio.subprocess.Process, script: str) -> None:
        self.process = process
        self.script = script
        self.lines: list[dict[str, Any]] = []

    async def next(self, timeout: float = 30) -> dict[str, Any]:
        """The next JSON line the script prints (other output is skipped)."""
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not raw:
                stderr = await self.process.stderr.read() if self.process.stderr else b""
                raise RuntimeError(f"node {self.script} ended: {stderr.decode(errors='replace')[-3000:]}")
            if raw.startswith(b"{"):
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                return line

    async def until(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """Read lines until one of `type` `kind` arrives; fail on a `failed` line."""
        while True:
            line = await self.next(timeout)
            if line["type"] == "failed":
                raise AssertionError(f"node {self.script}: {line}")
            if line["type"] == kind:
                return line

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()


@contextlib.asynccontextmanager
async def node_session(script: str, plan: Mapping[str, Any]) -> AsyncIterator[NodeSession]:
    """Start `node tests/js/<script> '<plan as JSON>'`; kill it when the block ends."""
    process = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / script), json.dumps(plan), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeSession(process, script)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
