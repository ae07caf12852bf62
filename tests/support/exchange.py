"""Local servers that speak Binance's and OKX's documented websocket (and REST) formats from recorded frames.

`tests/data/binance/<symbol>.json` holds the frames of each websocket
connection in order; a frame marked `dropped` is one the exchange made but
the stream lost (a gap). `GET /stream?streams=...` replays the next
connection's frames (paced, so a depth snapshot can be fetched in between)
and closes it after the last one, except the last connection, which stays
open: a disconnect. `GET /api/v3/depth` answers the snapshot the exchange
would give now: every depth update made so far, sent or dropped, applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from realtime.waits import cancel
from tests.support.processes import ROOT, free_port

DATA = ROOT / "tests" / "data"
PACE = 0.05  # s between two frames


def apply(book: dict[str, dict[str, str]], update: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in update[key]:
            if Decimal(qty) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


def exact(levels: dict[str, str]) -> dict[Decimal, Decimal]:
    return {Decimal(price): Decimal(qty) for price, qty in levels.items()}


@contextlib.asynccontextmanager
async def collected(url: str, channel: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published on `channel` while the block runs."""
    redis = aioredis.Redis.from_url(url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    messages: list[dict[str, Any]] = []

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                messages.append(json.loads(message["data"]))
    reader = asyncio.create_task(read())
    try:
        yield messages
    finally:
        await cancel(reader)
        await pubsub.aclose()
        await redis.aclose()


class Served:
    """An aiohttp server on a free local port for a replayed exchange: `routes` says what it answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class ReplayedExchange(Served):
    def __init__(self, path: Path) -> None:
        super().__init__()
        recorded = json.loads(path.read_text())
        self.symbol: str = recorded["symbol"]
        self.connections: list[list[dict[str, Any]]] = recorded["connections"]
        self.book: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
        self.last_id = 0
        self.opened = 0
        self.snapshots = 0
        self.streams: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def made(self, frame: dict[str, Any]) -> None:
        data = frame["data"]
        if data.get("e") == "depthUpdate":
            apply(self.book, data)
            self.last_id = data["u"]

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.streams.append(request.query.get("streams", ""))
        index = self.opened
        self.opened += 1
        if index >= len(self.connections):
            await ws.close()
            return ws
        for entry in self.connections[index]:
            await asyncio.sleep(PACE)
            self.made(entry["frame"])
            if not entry.get("dropped"):
                await ws.send_str(json.dumps(entry["frame"]))
        if index < len(self.connections) - 1:
            await asyncio.sleep(PACE * 4)
            await ws.close()  # the exchange drops the connection
        else:
            async for _ in ws:
                pass
        return ws

    async def depth(self, request: web.Request) -> web.Response:
        if request.query.get("symbol") != self.symbol:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        self.snapshots += 1
        def side(levels: dict[str, str], reverse: bool) -> list[list[str]]:
            return [[p, q] for p, q in sorted(levels.items(), key=lambda level: Decimal(level[0]), reverse=reverse)]
        return web.json_response({"lastUpdateId": self.last_id, "E": 0, "T": 0,
                                  "bids": side(self.book["bids"], True), "asks": side(self.book["asks"], False)})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/api/v3/depth", self.depth)


class ReplayedOkx(Served):
    """OKX's public websocket from recorded frames (`tests/data/okx/<inst>.json`).

    Each connection waits for the client's `subscribe`, then replays its
    frames; an entry with `"await": "subscribe"` is sent only once the
    client subscribed to the books again (what OKX's documentation asks of a
    client that saw a `prevSeqId` gap), and the snapshot it carries is the
    one that new subscription gets. Every connection but the last is closed
    after its frames.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        recorded = json.loads(path.read_text())
        self.connections: list[list[dict[str, Any]]] = recorded["connections"]
        self.final: dict[str, dict[str, str]] = recorded["final"]
        self.requests: list[dict[str, Any]] = []
        self.opened = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ws/v5/public"

    async def _request(self, ws: web.WebSocketResponse) -> dict[str, Any]:
        message = await ws.receive_str()
        request: dict[str, Any] = json.loads(message)
        self.requests.append(request)
        await ws.send_str(json.dumps({"event": request["op"], "arg": request["args"][0], "connId": "replay"}))
        return request

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        index = self.opened
        self.opened += 1
        if index >= len(self.connections):
            await ws.close()
            return ws
        await self._request(ws)
        for entry in self.connections[index]:
            await asyncio.sleep(PACE)
            if entry.get("await") == "subscribe":
                while not ((asked := await self._request(ws))["op"] == "subscribe"
                           and asked["args"][0]["channel"] == "books"):
                    pass
            if not entry.get("dropped"):
                await ws.send_str(json.dumps(entry["frame"]))
        if index < len(self.connections) - 1:
            await asyncio.sleep(PACE * 4)
            await ws.close()
        else:
            async for _ in ws:
                pass
        return ws

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws/v5/public", self.stream)
