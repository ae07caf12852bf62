"""`realtime feed --source binance | okx`: an exchange's streams normalised (`feed.binance`, `feed.okx`)
onto the price channel.

Binance: one combined websocket stream for every mapped symbol (`bookTicker`, `depth@100ms`, `trade`
or `aggTrade`). OKX: one connection, `tickers`, `trades` and `books` subscribed per instrument; a
book gap subscribes its `books` again for a new snapshot. Each is read until it ends; then a
reconnection after a jittered backoff (0.5 s doubling to 30 s), and every book waits for a fresh
snapshot. A depth gap (or a snapshot older than the
buffered stream) fetches a snapshot again; gateways that asked for one on `<price channel>:control`
get the adapter's local book. Counters per source — frames, reconnects, resyncs — are on
`/metrics` at `--metrics-port` when given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from realtime.backplane.connections import REDIS_ERRORS, Backoff
from realtime.feed import okx
from realtime.feed.binance import Depth, FrameRefused, quote, trade
from realtime.metrics import Tally

logger = logging.getLogger(__name__)

Publish = Callable[[list[tuple[str, bytes]]], Awaitable[None]]  # [(asset, message)]


class Counters(Collector):
    """What `/metrics` of `realtime feed` shows, per source: plain numbers, exported at scrape time."""

    def __init__(self) -> None:
        self.frames = Tally()  # by source and kind
        self.reconnects = Tally()  # by source
        self.resyncs = Tally()  # by source and asset
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield self.frames.family("realtime_feed_frames", "exchange frames, by source and kind (refused: unusable)",
                                 ["source", "kind"])
        yield self.reconnects.family("realtime_feed_reconnects", "exchange stream connections after the first",
                                     ["source"])
        yield self.resyncs.family("realtime_feed_resyncs", "depth gaps (or stale snapshots) that fetched a new "
                                  "snapshot, by source and asset", ["source", "asset"])

    async def serve(self, port: int) -> web.AppRunner:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), content_type="text/plain")
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


class Adapter:
    """One exchange's websocket: read until it ends, reconnect after a backoff, count it all per source."""

    source = ""

    def __init__(self, mapping: dict[str, str], *, ws_url: str, publish: Publish, counters: Counters) -> None:
        self.mapping = mapping
        self.ws_url = ws_url.rstrip("/")
        self.publish = publish
        self.counters = counters
        self._lock = asyncio.Lock()  # one asset's messages leave in the order they were made

    def stream_url(self) -> str:
        raise NotImplementedError

    def reset(self) -> None:
        """A new connection: every book waits for a fresh snapshot."""

    async def opened(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection is up (subscribe here if the exchange wants it)."""

    async def frame(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                    raw: str) -> None:
        raise NotImplementedError

    async def run(self, session: aiohttp.ClientSession, *, connections: int | None = None) -> None:
        """Read the stream, reconnecting forever (or `connections` times, for tests)."""
        backoff = Backoff(base=0.5, cap=30.0)
        attempt = 0
        while connections is None or attempt < connections:
            if attempt:
                self.counters.reconnects.add((self.source,))
            attempt += 1
            self.reset()
            try:
                async with session.ws_connect(self.stream_url(), heartbeat=20) as ws:
                    logger.info("feed: %s stream connected (%d symbols)", self.source, len(self.mapping))
                    backoff.reset()
                    await self.opened(ws)
                    async for frame in ws:
                        if frame.type == aiohttp.WSMsgType.TEXT:
                            await self.frame(session, ws, frame.data)
                        elif frame.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                logger.warning("feed: %s stream ended; reconnecting", self.source)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                logger.warning("feed: %s stream failed (%s); reconnecting", self.source, exc.__class__.__name__)
            await asyncio.sleep(backoff.next_delay())

    def refused(self, exc: Exception) -> None:
        self.counters.frames.add((self.source, "refused"))
        logger.warning("feed: %s frame refused: %s", self.source, exc)

    async def send(self, asset: str, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        async with self._lock:
            try:
                await self.publish([(asset, orjson.dumps(message)) for message in messages])
            except REDIS_ERRORS as exc:
                # Books notice the loss as a gap and ask (control channel) for the snapshot `answer` sends.
                logger.warning("feed: could not publish %d messages of %s (%s)", len(messages), asset,
                               exc.__class__.__name__)

    def answer(self, asset: str) -> dict[str, Any] | None:
        """A gateway's resync request: a snapshot of the asset's book, if the adapter holds one."""
        return None


class Binance(Adapter):
    source = "binance"

    def __init__(self, mapping: dict[str, str], *, ws_url: str, rest_url: str, publish: Publish,
                 counters: Counters, trades: str = "trade", depth_limit: int = 1000) -> None:
        super().__init__(mapping, ws_url=ws_url, publish=publish, counters=counters)
        self.rest_url = rest_url.rstrip("/")
        self.trades = trades
        self.depth_limit = depth_limit
        self.books = {asset: Depth(asset) for asset in mapping.values()}
        self._fetching: dict[str, asyncio.Task[None]] = {}

    def stream_url(self) -> str:
        names = [f"{symbol.lower()}@{kind}" for symbol in self.mapping
                 for kind in ("bookTicker", "depth@100ms", self.trades)]
        return f"{self.ws_url}/stream?streams={'/'.join(names)}"

    def reset(self) -> None:
        for book in self.books.values():
            book.reset()

    async def frame(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                    raw: str) -> None:
        try:
            envelope = orjson.loads(raw)
            data = envelope.get("data", envelope) if isinstance(envelope, dict) else None
            if not isinstance(data, dict):
                raise FrameRefused("not an object")
            asset = self.mapping.get(str(data.get("s", "")).upper())
            if asset is None:
                raise FrameRefused(f"unmapped symbol {str(data.get('s'))[:32]!r}")
            kind = data.get("e", "bookTicker" if "b" in data and "u" in data else None)
            if kind == "depthUpdate":
                book = self.books[asset]
                before = book.resyncs
                messages, fetch = book.event(data)
                self._gaps(asset, before)
                if fetch:
                    self._fetch(session, asset)
            elif kind in ("trade", "aggTrade"):
                messages = [trade(data, asset)]
            elif kind == "bookTicker":
                messages = [quote(data, asset)]
            else:
                raise FrameRefused(f"unknown event {str(kind)[:32]!r}")
        except (orjson.JSONDecodeError, FrameRefused) as exc:
            self.refused(exc)
            return
        self.counters.frames.add((self.source, str(kind)))
        await self.send(asset, messages)

    def _fetch(self, session: aiohttp.ClientSession, asset: str) -> None:
        running = self._fetching.get(asset)
        if running is None or running.done():
            self._fetching[asset] = asyncio.create_task(self._snapshot(session, asset), name=f"binance-{asset}")

    async def _snapshot(self, session: aiohttp.ClientSession, asset: str) -> None:
        """Fetch REST depth snapshots until one fits the buffered stream (Binance's documented procedure)."""
        symbol = next(symbol for symbol, name in self.mapping.items() if name == asset)
        book = self.books[asset]
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                async with session.get(f"{self.rest_url}/api/v3/depth",
                                       params={"symbol": symbol, "limit": str(self.depth_limit)}) as response:
                    response.raise_for_status()
                    body: Any = await response.json(loads=orjson.loads)
                before = book.resyncs
                messages, again = book.snapshot(body)
                self._gaps(asset, before)
                await self.send(asset, messages)
                if not again:
                    return
            except (aiohttp.ClientError, OSError, TimeoutError, FrameRefused) as exc:
                logger.warning("feed: binance snapshot of %s failed (%s); retrying", asset, exc)
            await asyncio.sleep(backoff.next_delay())

    def _gaps(self, asset: str, before: int) -> None:
        gaps = self.books[asset].resyncs - before
        if gaps:
            self.counters.resyncs.add((self.source, asset), gaps)
            logger.warning("feed: binance depth gap on %s; fetching a snapshot", asset)

    def answer(self, asset: str) -> dict[str, Any] | None:
        """A gateway's resync request: the local book, if it is in step with the stream."""
        book = self.books.get(asset)
        return book.message() if book is not None and book.synced else None


class Okx(Adapter):
    """OKX's public websocket: `tickers`, `trades` and `books` subscribed per instrument after connecting."""

    source = "okx"
    CHANNELS = ("tickers", "trades", "books")

    def __init__(self, mapping: dict[str, str], *, ws_url: str, publish: Publish, counters: Counters) -> None:
        super().__init__(mapping, ws_url=ws_url, publish=publish, counters=counters)
        self.books = {asset: okx.Sequence(asset) for asset in mapping.values()}

    def stream_url(self) -> str:
        return self.ws_url

    def reset(self) -> None:
        for book in self.books.values():
            book.reset()

    async def opened(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(orjson.dumps(okx.subscribe("subscribe", list(self.CHANNELS), list(self.mapping))).decode())

    async def frame(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                    raw: str) -> None:
        if raw == "pong":
            return
        try:
            envelope = orjson.loads(raw)
            if not isinstance(envelope, dict):
                raise FrameRefused("not an object")
            if "event" in envelope:  # subscribe / unsubscribe / error answers
                if envelope["event"] == "error":
                    logger.warning("feed: okx refused a request: %s", envelope.get("msg"))
                return
            arg = envelope.get("arg") or {}
            inst = str(arg.get("instId", "")).upper()
            asset = self.mapping.get(inst)
            if asset is None:
                raise FrameRefused(f"unmapped instrument {inst[:32]!r}")
            channel = arg.get("channel")
            messages: list[dict[str, Any]] = []
            for data in envelope.get("data") or []:
                if channel == "tickers":
                    messages.append(okx.quote(data, asset))
                elif channel == "trades":
                    messages.append(okx.trade(data, asset))
                elif channel == "books":
                    message, again = self.books[asset].book(str(envelope.get("action")), data)
                    if message is not None:
                        messages.append(message)
                    if again:
                        self.counters.resyncs.add((self.source, asset))
                        logger.warning("feed: okx book gap on %s; subscribing again for a snapshot", asset)
                        for op in ("unsubscribe", "subscribe"):
                            await ws.send_str(orjson.dumps(okx.subscribe(op, ["books"], [inst])).decode())
                else:
                    raise FrameRefused(f"unknown channel {str(channel)[:32]!r}")
        except (orjson.JSONDecodeError, FrameRefused) as exc:
            self.refused(exc)
            return
        self.counters.frames.add((self.source, str(channel)))
        await self.send(asset, messages)


async def run_exchange(adapter: Adapter, *, metrics_port: int | None = None) -> None:
    runner = await adapter.counters.serve(metrics_port) if metrics_port else None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
            await adapter.run(session)
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
