"""The gateway process: assembles the parts, owns the socket, the background
tasks, the signals and a bounded graceful shutdown.

A price tick's way through the modules: `sources` (Redis or simulator) ->
`ingest` -> `prices` (validate, number, keep latest) -> `fanout` -> clients.
Client events go to `gateway`; back-end events arrive through `manager`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import health, transport
from .api import PREFIX, Api
from .auth import TokenVerifier
from .board import Board
from .catalog import Catalog
from .config import Settings
from .demand import Demand, demand_store
from .fanout import fanout
from .gateway import Gateway
from .ingest import Ingest
from .limits import AddressLimiter, handshake_limit
from .manager import RedisManager, client_manager, manager_ready
from .metrics import Metrics, RedisLink, State
from .presence import presence
from .prices import PriceBook
from .protocol import asset_room
from .serializers import SocketServer, packet_class
from .sources import RedisSource, price_source
from .writer import Writers

log = logging.getLogger("realtime.server")

# Where python-socketio serves Engine.IO (its default `socketio_path`).
ENGINEIO_PATH = "/socket.io/"
ENGINEIO_CLOSE = "1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sio = SocketServer(
            async_mode="aiohttp",
            client_manager=client_manager(settings),
            serializer=packet_class(settings.serializer),
            cors_allowed_origins=_cors(settings.cors_origins),
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            max_http_buffer_size=settings.max_message_bytes,
            logger=False,
            engineio_logger=False,
        )
        self.writers = Writers(settings.slow_consumer_bytes, settings.slow_consumer_max_bytes)
        transport.install(
            self.sio.eio, compression=settings.websocket_compression, trusted_proxies=settings.trusted_proxies,
            writers=self.writers,
        )
        self.catalog = Catalog(settings.catalog)
        self.book = PriceBook(self.catalog)
        self.verifier = TokenVerifier(settings)
        self.metrics = Metrics(settings.instance_id)
        self.presence = presence(settings)
        self.gateway = Gateway(self.sio, settings, self.verifier, self.catalog, self.book, self.metrics,
                               self.presence)
        self.source = price_source(settings)
        self.ingest = Ingest(self.source, self.book, fanout(self.sio, settings.fanout), self.metrics)
        self.demand = Demand(demand_store(settings), self.catalog, settings.instance_id,
                             local=self._local_subscribers, interval=settings.demand_interval)
        self.metrics.watch(self._metric_state())
        self.health = health.HealthState(
            instance_id=settings.instance_id,
            started=time.monotonic(),
            redis_required=not settings.embedded,
            redis_up=lambda: self.source.connected and manager_ready(self.sio.manager),
            connections=lambda: len(self.gateway.connections),
        )

        self.connect_limiter = AddressLimiter(settings.connect_rate, settings.connect_burst, settings.connect_addresses)
        self.app = web.Application(middlewares=[
            self._turn_away_while_draining,
            handshake_limit(self.connect_limiter, transport.address_of(settings.trusted_proxies)),
        ])
        self.sio.attach(self.app)
        self.app.add_routes(health.routes(self.health))
        self.app.add_routes(self.metrics.routes())
        self.app.add_subapp(PREFIX, Api(self.sio, settings, self.verifier, self.catalog, self.book, self.demand,
                                        self.metrics).app())
        self.app.add_routes(Board(settings, self.catalog, self.verifier).routes())

        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        # Start the manager now rather than at the first connection, so /ready
        # reflects Redis from the start and back-end emits reach us at once.
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        self._tasks.append(asyncio.create_task(self.ingest.run(), name="ingest"))
        self._tasks.append(asyncio.create_task(self.demand.run(), name="demand"))
        await self.presence.start()

        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                                     shutdown_timeout=self.settings.shutdown_grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        # The cyclic GC, run every 700 allocations, was a third of fan-out CPU and
        # set the latency tail: keep what start-up built out of its sight, and let
        # the young generation grow (PERFORMANCE.md, finding 3).
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        mode = "embedded (in-memory manager, simulated feed)" if self.settings.embedded else "redis"
        log.info("instance %s listening on http://%s:%d, %s mode%s", self.settings.instance_id,
                 self.settings.host, self.port, mode,
                 "; no JWT key configured: dev mode" if self.settings.dev_mode else "")

    async def stop(self) -> None:
        """Drain within `shutdown_grace`: not-ready at once, clients moved away, then exit."""
        started = time.monotonic()
        connections = len(self.gateway.connections)
        # Report not-ready and turn new sessions away, so nginx and Kubernetes move on.
        self.health.draining = True
        self.gateway.accepting = False
        # Give up this pod's per-user slots in one go, not one Redis call per client.
        await self.presence.stop()
        # Close every client's transport; socket.io-client reconnects elsewhere by itself.
        await self._close_transports()
        self.gateway.close()
        # Stop background work.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        manager_task = getattr(self.sio.manager, "thread", None)
        if isinstance(manager_task, asyncio.Task):
            manager_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await manager_task
        # Let the closing transports finish (aiohttp waits for their handlers, up
        # to the grace, then cancels them), then release the port.
        if self._runner is not None:
            await self._runner.cleanup()
        await self.demand.close()
        counts = ", ".join(f"{k.value}={v}" for k, v in sorted(self.ingest.counts.items()))
        log.info("instance %s stopped in %.2fs; closed %d connections; feed ticks: %s", self.settings.instance_id,
                 time.monotonic() - started, connections, counts or "none")

    def _local_subscribers(self) -> dict[str, int]:
        rooms = self.sio.manager.rooms.get("/", {})
        return {name: len(rooms.get(asset_room(name), ())) for name in self.catalog.names}

    def _metric_state(self) -> State:
        """Where /metrics finds what the parts keep as attributes."""
        redis: list[RedisLink] = []
        source, manager = self.source, self.sio.manager
        if isinstance(source, RedisSource):
            redis.append(RedisLink("feed", lambda: source.connected, lambda: source.reconnects))
        if isinstance(manager, RedisManager):
            redis.append(RedisLink("manager", lambda: manager.listening, lambda: manager.reconnects))
        counters: list[tuple[str, str, Callable[[], int]]] = [
            ("realtime_slow_consumers_cut", "connections cut for not reading their messages",
             lambda: self.writers.cut),
            ("realtime_price_ticks_collapsed", "queued price ticks replaced by a newer one of the same asset",
             lambda: self.writers.collapsed),
            ("realtime_connect_rate_limited", "new sessions refused with 429 by the per-address connection rate",
             lambda: self.connect_limiter.refused),
        ]
        if isinstance(manager, RedisManager):
            counters.append(("realtime_manager_publish_dropped",
                             "emits that reached only this pod's clients because Redis was down",
                             lambda: manager.publish_dropped))
        return State(
            # Not eio.transport(sid): it raises for a closing session, and deletes it.
            transports=lambda: ("websocket" if socket.upgraded else "polling"
                                for socket in list(self.sio.eio.sockets.values()) if not socket.closed),
            subscribers=self._local_subscribers,
            demand=lambda: self.demand.latest,
            feed=self.ingest.counts,
            redis=tuple(redis),
            manager_messages=(lambda: (manager.received, manager.published))
            if isinstance(manager, RedisManager) else None,
            counters=tuple(counters),
        )

    async def _close_transports(self) -> None:
        """Close each client's Engine.IO transport so socket.io-client reconnects at once.

        python-engineio's own `disconnect()` queues a CLOSE packet, which
        socket.io-client ignores on a websocket: the client would hang until its
        ping timeout (~45 s). A namespace disconnect would stop it from
        reconnecting at all. So: queue CLOSE (ends a polling client's pending
        long-poll at once), then wake the websocket writer with the end-of-queue
        marker, which makes it close the websocket itself.
        """
        eio = self.sio.eio

        async def close(socket: Any) -> None:
            # close() runs the disconnect handlers and queues CLOSE; None then ends the writer.
            await socket.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
            socket.queue.put_nowait(None)

        closing = []
        for socket in list(eio.sockets.values()):
            if socket.closed:
                # A client that said goodbye over a POST may have left a long-poll
                # pending, which python-engineio would hold for ping interval + timeout.
                socket.queue.put_nowait(None)
            elif not socket.closing:
                closing.append(close(socket))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace
        if closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True),
                                       timeout=max(0.1, self.settings.shutdown_grace))
        # Stay until every client has been told: a polling client between two
        # requests learns of the close only from its next GET, which must find us.
        # python-engineio forgets a session once its last request is answered,
        # and has no event for it: poll.
        while eio.sockets and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    @web.middleware
    async def _turn_away_while_draining(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # While draining, a request for a session this pod does not hold (a new
        # handshake, or a session nginx hashed here) gets 503 before its body is
        # read, so nginx retries it on the next pod.
        if self.health.draining and request.path.startswith(ENGINEIO_PATH):
            socket = self.sio.eio.sockets.get(request.query.get("sid", ""))
            if socket is None:
                return web.json_response({"ready": False, "draining": True}, status=503)
            if socket.closed and not socket.upgraded:
                # A polling request that arrives after its session was closed: a GET
                # gets Engine.IO's CLOSE, so the client sees a clean close and
                # reconnects; a POST (a pong, an event) is dropped, as the session is.
                if request.method != "GET":
                    return web.Response(text="ok", content_type="text/plain")
                self.sio.eio.sockets.pop(socket.sid, None)
                return web.Response(text=ENGINEIO_CLOSE, content_type="text/plain")
        return await handler(request)

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down within the grace."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("signal received: draining %d connections", len(self.gateway.connections))
        await self.stop()


def _cors(origins: list[str]) -> str | list[str] | None:
    if not origins:
        return None  # same origin only
    if "*" in origins:
        return "*"
    return origins
