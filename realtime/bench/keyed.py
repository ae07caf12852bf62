"""The `state` scenario: keyed state and channel subscriptions, measured on the wire (issue 22).

- Bandwidth: a portfolio of 50 positions updated 10 times a second, one
  field each time. The same stream of changes is sent twice to one websocket
  client: as `state:update` merges (`POST /api/v1/state`), and as the whole
  portfolio in a private event per change (`POST /api/v1/publish`, what a
  back end without keyed state sends). Bytes are counted as they arrive,
  websocket frame headers included.
- Subscribe latency through the subscribe hook (a small aiohttp app in this
  process answering allow), uncached (a new channel each time) and cached
  (the same channels again, from a second connection of the same user),
  against the token's `channels` claim (no hook).
- Redis bytes per state key: `MEMORY USAGE` of the portfolio's hash over its
  50 keys, and of the room history that keeps its updates for the window.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from realtime.backplane.connections import client
from realtime.bench.targets import bench_assets, free_port, start_target
from realtime.clients.auth import mint_token
from realtime.events.log import Keys
from realtime.events.state.store import StateRef

POSITIONS = 50
RATE = 10.0  # changes per second
SUBSCRIBES = 200
USER = "bench"


class WireClient:
    """A raw Engine.IO v4 websocket client: counts the bytes of what arrives, answers pings, sends acked events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.bytes = 0
        self.events = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, base: str, token: str) -> WireClient:
        ws = await session.ws_connect(base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket")
        opened = await ws.receive_str()
        assert opened.startswith("0"), opened
        await ws.send_str("40" + orjson.dumps({"token": token}).decode())
        reply = await ws.receive_str()
        assert reply.startswith("40"), reply
        return cls(ws)

    async def _read(self) -> None:
        async for message in self.ws:
            text = message.data if isinstance(message.data, str) else ""
            self.bytes += len(text.encode()) + _frame_header(len(text.encode()))
            if text.startswith("42"):
                self.events += 1
            if text == "2":
                await self.ws.send_str("3")
            elif text.startswith("43"):
                ack_id = int(text[2:text.index("[")])
                future = self._acks.pop(ack_id, None)
                if future is not None and not future.done():
                    future.set_result(orjson.loads(text[text.index("["):])[0])

    async def call(self, event: str, payload: Any) -> Any:
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[self._next] = future
        await self.ws.send_str(f"42{self._next}" + orjson.dumps([event, payload]).decode())
        return await asyncio.wait_for(future, 10)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def _frame_header(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def _portfolio(rng: random.Random) -> dict[str, dict[str, str]]:
    return {str(100_000 + i): {"asset": f"ASSET{i}_USDC_PERP", "side": rng.choice(["buy", "sell"]),
                               "qty": f"{rng.uniform(0.1, 5):.3f}", "entry": f"{rng.uniform(10, 90_000):.2f}",
                               "price": f"{rng.uniform(10, 90_000):.2f}", "profit": "0.00", "margin": "100.00",
                               "swap": "0.00", "opened": "2026-12-07T10:00:00Z"} for i in range(POSITIONS)}


async def keyed_state(*, redis_url: str, cpus: Sequence[int], workdir: Path, node_dir: Path,
                      seconds: float) -> dict[str, Any]:
    """Run the three measurements against a fresh gateway; their figures."""
    hook, hook_port = await _start_hook()
    secret = secrets.token_urlsafe(32)
    endpoint = await start_target("gateway", redis_url=redis_url, assets=bench_assets(3), secret=secret, cpus=cpus,
                                  workdir=workdir, node_dir=node_dir, settings={
                                      "REALTIME_SUBSCRIBE_HOOK": f"http://127.0.0.1:{hook_port}/hook",
                                      "REALTIME_MAX_CHANNELS": str(SUBSCRIBES + 10),
                                      "REALTIME_EVENT_RATE": "0"})
    base = f"http://{endpoint.host}:{endpoint.port}"
    service = {"Authorization": f"Bearer {mint_token(secret, 'bench-backend', roles=['service'])}"}
    try:
        async with aiohttp.ClientSession() as session:
            bandwidth = await _bandwidth(session, base, service, secret, seconds)
            latency = await _subscribe_latency(session, base, secret)
        redis = client(redis_url, 5.0)
        try:
            keys = Keys(endpoint.manager_channel)
            room = StateRef.of("positions", user=USER).room
            state_bytes = int(await redis.memory_usage(keys.state(room)) or 0)
            history_bytes = int(await redis.memory_usage(keys.room(room)) or 0)
            history_entries = int(await redis.llen(keys.room(room)))
        finally:
            await redis.aclose()
    finally:
        endpoint.stop()
        await hook.cleanup()
    return {**bandwidth, **latency, "redis_state_bytes": state_bytes,
            "redis_bytes_per_state_key": round(state_bytes / POSITIONS, 1),
            "redis_history_bytes": history_bytes, "redis_history_entries": history_entries,
            "redis_history_bytes_per_update": round(history_bytes / max(1, history_entries), 1)}


async def _bandwidth(session: aiohttp.ClientSession, base: str, service: dict[str, str], secret: str,
                     seconds: float) -> dict[str, Any]:
    rng = random.Random(22)
    portfolio = _portfolio(rng)
    status = await _post(session, base + "/api/v1/state", service, {"user": USER, "name": "positions", "ops": [
        {"op": "set", "key": key, "value": value} for key, value in portfolio.items()]})
    assert status == 200, status
    changes = int(seconds * RATE)
    plan = [(rng.choice(list(portfolio)), f"{rng.uniform(-500, 500):.2f}") for _ in range(changes)]
    figures: dict[str, Any] = {"positions": POSITIONS, "changes_per_s": RATE, "changes": changes}
    for way in ("merge", "whole"):
        wire = await WireClient.connect(session, base, mint_token(secret, USER))
        try:
            ack = await wire.call("state:subscribe", {"name": "positions"})
            assert ack["ok"], ack
            start_bytes, start_events = wire.bytes, wire.events
            started = time.monotonic()
            for i, (key, profit) in enumerate(plan):
                await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
                portfolio[key]["profit"] = profit
                if way == "merge":
                    body: dict[str, Any] = {"user": USER, "name": "positions",
                            "ops": [{"op": "merge", "key": key, "changes": {"profit": profit}}]}
                    status = await _post(session, base + "/api/v1/state", service, body)
                else:
                    body = {"event": "portfolio:update", "user": USER, "data": portfolio}
                    status = await _post(session, base + "/api/v1/publish", service, body)
                assert status in (200, 202), status
            await _settle(wire, start_events + changes)
            figures[f"{way}_bytes"] = wire.bytes - start_bytes
            figures[f"{way}_bytes_per_change"] = round((wire.bytes - start_bytes) / changes, 1)
        finally:
            await wire.close()
    figures["merge_vs_whole_pct"] = round(100 * figures["merge_bytes"] / figures["whole_bytes"], 2)
    figures["portfolio_json_bytes"] = len(orjson.dumps(portfolio))
    return figures


async def _settle(wire: WireClient, events: int) -> None:
    deadline = time.monotonic() + 10
    while wire.events < events:
        if time.monotonic() > deadline:
            raise AssertionError(f"{events - wire.events} events never arrived")
        await asyncio.sleep(0.05)


async def _subscribe_latency(session: aiohttp.ClientSession, base: str, secret: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"subscribes": SUBSCRIBES}
    channels = [f"bot:{i}" for i in range(SUBSCRIBES)]
    runs = (("hook_uncached", USER + "-hook", None), ("hook_cached", USER + "-hook", None),
            ("claim", USER + "-claim", ["bot:*"]))
    for label, sub, claim in runs:
        wire = await WireClient.connect(session, base, mint_token(secret, sub, channels=claim))
        try:
            took: list[float] = []
            for channel in channels:
                started = time.perf_counter()
                ack = await wire.call("channel:subscribe", {"channel": channel})
                took.append((time.perf_counter() - started) * 1000)
                assert ack["ok"], ack
            took.sort()
            figures[f"{label}_p50_ms"] = round(took[len(took) // 2], 3)
            figures[f"{label}_p99_ms"] = round(took[int(len(took) * 0.99) - 1], 3)
        finally:
            await wire.close()
    return figures


async def _post(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: Any) -> int:
    async with session.post(url, data=orjson.dumps(body), headers={**headers, "Content-Type": "application/json"}
                            ) as response:
        await response.read()
        return response.status


async def _start_hook() -> tuple[web.AppRunner, int]:
    """The customer's back end: allows everything, for a minute."""
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"allow": True, "ttl": 60})

    app = web.Application()
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port

