"""The `recovery` scenario: what connection state recovery costs.

N clients connect fresh (each its own user), the server's CONNECT reply
gives each a pid; then every transport is cut at once, one private event per
user is stored while they are away, and, once the server has let go of the
old connections (as a surviving pod has none to let go of), all N reconnect
at once with their pid (a reconnect storm after a pod dies), each waiting
for its replayed event. Reported: connects/s fresh and recovering, how many recovered, and
Redis memory per session and per stored event (`MEMORY USAGE`).

The clients are raw Engine.IO websocket clients in the bench process itself
(not the load-generator workers), so the rates are a floor on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from realtime.bench.loadgen import client_frame
from realtime.bench.targets import Endpoint
from realtime.clients.auth import mint_token
from realtime.events.emitter import Emitter
from realtime.events.log import Keys

EVENT = "bench:event"
# Events stored in one room to measure the cost per event of a busy room's history.
BUSY_ROOM_EVENTS = 1000


class Peer:
    """One raw websocket client: handshake, CONNECT, then frames until told to stop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, endpoint: Endpoint, auth: dict[str, Any]) -> tuple[Peer, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {endpoint.path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {endpoint.host}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(head[9:12].decode(errors="replace"))
        peer = cls(reader, writer)
        await peer.frame()  # Engine.IO open
        writer.write(client_frame(b"40" + orjson.dumps(auth)))
        while True:
            text = await peer.frame()
            if text.startswith(b"40"):
                reply: dict[str, Any] = orjson.loads(text[2:])
                return peer, reply
            if text.startswith(b"44"):
                writer.close()
                raise ConnectionError("REFUSED")

    async def frame(self) -> bytes:
        """The next frame's payload (pings answered on the way)."""
        while True:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(size)
            if payload == b"2":
                self.writer.write(client_frame(b"3"))
                continue
            return payload

    async def until_event(self, event: str) -> None:
        prefix = b'42["' + event.encode() + b'"'
        while not (await self.frame()).startswith(prefix):
            pass

    def cut(self) -> None:
        """Drop the connection as a network does: no close frame."""
        self.writer.transport.abort()


async def recovery(endpoint: Endpoint, *, clients: int, concurrency: int) -> dict[str, Any]:
    """Fresh connects, a cut, stored events, a recovering reconnect storm; Redis bytes per session and event."""
    if endpoint.name == "node":
        return {"skipped": "Node's recovery needs its Redis Streams adapter, which the node target does not use"}
    limit = asyncio.Semaphore(concurrency)
    tokens = [mint_token(endpoint.secret, f"bench-r{i}", roles=[], ttl=3600) for i in range(clients)]
    peers: list[Peer | None] = [None] * clients
    pids: list[str | None] = [None] * clients
    errors: dict[str, int] = {}

    def failed(error: BaseException) -> None:
        name = str(error) or error.__class__.__name__
        errors[name] = errors.get(name, 0) + 1

    async def fresh(i: int) -> None:
        async with limit:
            try:
                peers[i], reply = await Peer.connect(endpoint, {"token": tokens[i]})
                pids[i] = reply.get("pid")
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as error:
                failed(error)

    started = time.perf_counter()
    await asyncio.gather(*(fresh(i) for i in range(clients)))
    fresh_seconds = time.perf_counter() - started
    connected = sum(1 for p in peers if p is not None)

    # Everyone drops; one event per user is stored while they are away.
    for peer in peers:
        if peer is not None:
            peer.cut()
    # A pod that died leaves its clients to the others, which have no disconnects to process:
    # let this server finish with them before the storm.
    await _until_idle(endpoint)
    emitter = Emitter(endpoint.redis_url, channel=endpoint.manager_channel)
    try:
        for first in range(0, clients, 200):
            await asyncio.gather(*(emitter.emit(EVENT, {"n": i}, user=f"bench-r{i}")
                                   for i in range(first, min(clients, first + 200))))
        recovered = 0

        async def again(i: int) -> None:
            nonlocal recovered
            pid = pids[i]
            if pid is None:
                return
            async with limit:
                try:
                    peer, reply = await Peer.connect(endpoint, {"token": tokens[i], "pid": pid})
                    await peer.until_event(EVENT)
                    peers[i] = peer
                    recovered += reply.get("pid") == pid
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as error:
                    failed(error)

        started = time.perf_counter()
        await asyncio.gather(*(again(i) for i in range(clients)))
        recover_seconds = time.perf_counter() - started
        memory = await _memory(endpoint, emitter, [p for p in pids if p])
    finally:
        await emitter.aclose()
        for peer in peers:
            if peer is not None:
                peer.cut()
    return {
        "clients": clients, "connected": connected, "errors": errors,
        "fresh": {"seconds": round(fresh_seconds, 3),
                  "connects_per_s": round(connected / fresh_seconds, 1) if fresh_seconds else None},
        "recovering": {"recovered": recovered, "seconds": round(recover_seconds, 3),
                       "connects_per_s": round(recovered / recover_seconds, 1) if recover_seconds else None},
        **memory,
    }


async def _until_idle(endpoint: Endpoint, limit: float = 30.0) -> None:
    """Wait (at most `limit` seconds) until the server's /health counts no connection."""
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with http.get(f"http://{endpoint.host}:{endpoint.port}/health") as response:
                    if (await response.json()).get("connections") == 0:
                        return
            await asyncio.sleep(0.1)


async def _memory(endpoint: Endpoint, emitter: Emitter, pids: list[str]) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(endpoint.redis_url)
    keys = Keys(endpoint.manager_channel)
    try:
        sample = pids[:200]
        session_bytes = [await redis.memory_usage(f"{endpoint.manager_channel}:session:{{{pid}}}", samples=0)
                         for pid in sample]
        sessions = [b for b in session_bytes if b]
        # A room that got one event (each user here), and a busy room of BUSY_ROOM_EVENTS.
        quiet = await redis.memory_usage(keys.room("user:bench-r0"), samples=0)
        busy_before = await redis.memory_usage(keys.log, samples=0) or 0
        for first in range(0, BUSY_ROOM_EVENTS, 200):
            await asyncio.gather(*(emitter.emit(EVENT, {"n": n}, user="bench-busy")
                                   for n in range(first, first + 200)))
        busy = await redis.memory_usage(keys.room("user:bench-busy"), samples=0) or 0
        busy_after = await redis.memory_usage(keys.log, samples=0) or 0
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
    return {
        "redis_bytes_per_session": round(sum(sessions) / len(sessions)) if sessions else None,
        "redis_bytes_per_event_log": round((busy_after - busy_before) / BUSY_ROOM_EVENTS),
        "redis_bytes_per_event_busy_room": round(busy / BUSY_ROOM_EVENTS),
        "redis_bytes_room_with_one_event": quiet,
    }
