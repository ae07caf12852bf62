"""The gateway process: builds the parts, owns the port, the background tasks,
the signals and a bounded graceful shutdown.

A price tick: `feed.sources` (Redis or simulator) -> `feed.ingest` ->
`feed.prices` (validate, number, keep latest) -> `send.fanout` ->
`engine.writer` -> the socket. A private event: `http.api`, `events.emitter` or
`events.router` -> `events.log` (Redis Streams) -> every pod's `events.reader`
-> the user's room, with its offset (`events.recovery` replays it to a
recovering connection). Client events: `clients.handlers`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections import Counter

from aiohttp import web

from realtime.backends import backends
from realtime.books.gauges import BookGauges
from realtime.books.service import Books
from realtime.catalog import Catalog
from realtime.channels.access import channel_access
from realtime.clients.auth import TokenVerifier
from realtime.clients.books import BookHandlers
from realtime.clients.channels import Channels
from realtime.clients.handlers import Gateway
from realtime.clients.limits import AddressGauges, AddressLimiter
from realtime.clients.prices import PriceHandlers
from realtime.clients.state import StateSubscriptions
from realtime.clients.trades import TradeHandlers
from realtime.cluster.demand import Demand
from realtime.config import Settings
from realtime.engine import heads, versions
from realtime.engine.gauges import EngineGauges
from realtime.engine.proxies import address_of
from realtime.engine.server import SocketServer
from realtime.engine.writer import Writers
from realtime.events.gauges import EventGauges
from realtime.events.service import Events, retention
from realtime.events.state.demo import DemoPortfolio
from realtime.events.state.service import States
from realtime.feed.gauges import FeedGauges
from realtime.feed.ingest import Ingest
from realtime.feed.prices import PriceBook
from realtime.http import health
from realtime.http.api import PREFIX, Api
from realtime.http.board import DEV_TOKEN_SUBJECT, Board
from realtime.http.middleware import handshake_limit, turn_away_while_draining
from realtime.metrics import Metrics, State
from realtime.rooms import ASSET, BOOK, CANDLES, TRADES, room_asset, room_book, room_market, tier_room
from realtime.send.fanout import fanout
from realtime.send.overload import FeedLag, Overload, RateGauges
from realtime.send.rates import RateTiers
from realtime.trades.gauges import TradeGauges
from realtime.trades.service import Market
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# The kinds of room whose members make this pod watch an asset (`_watch_assets`).
WATCHED_KINDS = frozenset({ASSET, BOOK, TRADES, CANDLES})

LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class Server:
    def __init__(self, settings: Settings) -> None:
        versions.check()
        self.settings = settings
        self.metrics = Metrics(settings.instance_id)
        # Every swappable part, chosen by REALTIME_REDIS_URL (memory:// or Redis).
        self.backends = backends(settings, forget=self._forget)
        # The Socket.IO layer and the send path.
        self.writers = Writers(settings.slow_consumer_bytes, settings.slow_consumer_max_bytes)
        self.sio = SocketServer(settings, self.writers, self.backends.manager)
        # Prices: catalog, validation and latest ticks, the source, the fan-out.
        self.catalog = Catalog(settings.catalog)
        self.book = PriceBook(self.catalog, band=settings.price_band, stale_after=settings.stale_after,
                              delays=settings.delay_tiers)
        self.metrics.registry.register(FeedGauges(self.book))
        self.source = self.backends.source
        self.restarts = self.backends.restarts
        send = fanout(self.sio, settings.fanout)
        # Order books ride the same feed; a broken one asks the feed (or the simulator) for a snapshot.
        self.books = Books(self.catalog, depths=settings.book_depths, interval_ms=settings.book_interval,
                           fanout=send, room_size=self.sio.room_size, ask=self.backends.book_requests.ask)
        self.metrics.registry.register(BookGauges(self.books))
        # How fast each connection is fed: rate tiers, and the overload cap on all of them.
        self.rates = RateTiers(self.sio)
        # Trades and candles ride the same feed; their history is shared through the store.
        self.market = Market(self.catalog, self.backends.market, send, self.sio.room_size,
                             keep_trades=settings.trades_history, keep_candles=settings.candles_history,
                             delays=settings.delay_tiers, hears=self.source.hears)
        self.metrics.registry.register(TradeGauges(self.market))
        self.feed_lag = FeedLag()
        self.ingest = Ingest(self.source, self.book, send, self.metrics, self.rates, self.restarts, self.books,
                             self.market, self.feed_lag)
        # Private events: the log, live delivery with offsets, sessions and recovery, the stream router.
        self.events = Events(settings, self.sio, self.catalog, log=self.backends.log,
                             sessions=self.backends.sessions, router=self.backends.router)
        # Clients: authentication, per-user presence across pods, event handlers.
        self.verifier = TokenVerifier(settings)
        self.presence = self.backends.presence
        self.gateway = Gateway(self.sio, settings, self.verifier, self.catalog, self.book, self.metrics,
                               self.presence, self.events.recovery, self.rates)
        PriceHandlers(self.gateway)
        BookHandlers(self.gateway, self.books)
        TradeHandlers(self.gateway, self.market)
        self.overload = Overload(self.rates, settings.overload_lag, on_change=self.gateway.rates.overload,
                                 feed=self.feed_lag)
        self.metrics.registry.register(RateGauges(self.rates, self.overload))
        # Channels and keyed state: their client events, and what a recovery restores of them.
        self.access = channel_access(settings, self.verifier.key if isinstance(self.verifier.key, str) else None,
                                     self.metrics.registry)
        self.states = States(settings, self.backends.states, keep=retention(settings))
        channels = Channels(self.gateway, self.sio, self.access, max_channels=settings.max_channels)
        StateSubscriptions(self.gateway, self.sio, self.states, self.access, self.events.reader,
                           max_states=settings.max_channels)
        self.gateway.recover_rooms(channels.vet, self.states.condense)
        self.gateway.extend(entitle=channels.recheck)
        # Embedded dev mode: the board's user holds a demo portfolio marked to the simulated prices.
        self.portfolio = (DemoPortfolio(self.states, self.book, self.catalog, DEV_TOKEN_SUBJECT)
                          if settings.embedded and settings.dev_mode and settings.simulated_rate > 0 else None)
        # Per-asset price channels follow the asset rooms of this pod.
        self._watch_assets()
        self.demand = Demand(self.backends.demand, self.catalog, settings.instance_id,
                             local=self._local_subscribers, interval=settings.demand_interval)
        self.connect_limiter = AddressLimiter(settings.connect_rate, settings.connect_burst, settings.connect_addresses)
        self.metrics.watch(self._metric_state())
        self.metrics.registry.register(AddressGauges(self.connect_limiter))
        self.metrics.registry.register(EventGauges(self.events))
        self.health = health.HealthState(
            instance_id=settings.instance_id,
            started=time.monotonic(),
            redis_required=not settings.embedded,
            redis_up=lambda: self.source.connected and self.sio.manager_ready and self.events.ready,
            connections=lambda: len(self.gateway.connections),
            price_channels=lambda: [channel for _, channel in self.source.channels()],
        )

        # HTTP: Engine.IO behind the drain, new sessions through the per-address rate and the pod's cap.
        self.app = web.Application(middlewares=[
            turn_away_while_draining(self.sio, lambda: self.health.draining),
        ])
        # Connections still sending a request head count toward the pod's cap with its sessions.
        self.heads = heads.Heads(settings.header_timeout,
                                 room=lambda: settings.max_connections - self.sio.session_count())
        self.metrics.registry.register(EngineGauges(self.sio, self.writers, self.heads))
        self.sio.gate_sessions(handshake_limit(self.connect_limiter, address_of(settings.trusted_proxies),
                                               sessions=lambda: self.sio.session_count() + self.heads.pending,
                                               max_sessions=settings.max_connections))
        self.sio.attach(self.app)
        self.app.add_routes(health.routes(self.health))
        self.app.add_routes(self.metrics.routes())
        self.app.add_subapp(PREFIX, Api(self.sio, settings, self.verifier, self.catalog, self.book, self.demand,
                                        self.metrics, self.events, self.states).app())
        self.app.add_routes(Board(settings, self.catalog, self.verifier).routes())

        self._runner: heads.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        self.sio.start_manager()
        self.events.start()
        await self.market.load()
        self._tasks.append(asyncio.create_task(self.ingest.run(), name="ingest"))
        self._tasks.append(asyncio.create_task(self.market.run(), name="trades"))
        self._tasks.append(asyncio.create_task(self.ingest.watch(), name="feed-timers"))
        self._tasks.append(asyncio.create_task(self.demand.run(), name="demand"))
        self._tasks.append(asyncio.create_task(self.books.run(), name="books"))
        self._tasks.append(asyncio.create_task(self.backends.book_requests.run(), name="book-requests"))
        self._tasks.append(asyncio.create_task(self.overload.run(), name="overload"))
        if self.portfolio is not None:
            self._tasks.append(asyncio.create_task(self.portfolio.run(), name="demo-portfolio"))
        await self.presence.start()

        # aiohttp would keep an idle keep-alive connection for an hour (its default keepalive_timeout).
        self._runner = heads.AppRunner(self.app, self.heads, handle_signals=False, access_log=None,
                                       shutdown_timeout=self.settings.shutdown_grace,
                                       keepalive_timeout=self.settings.keepalive_timeout)
        await self._runner.setup()
        # A reconnect storm opens thousands of connections at once: aiohttp's default backlog of 128
        # drops SYNs (clients wait out retransmits); Node listens with 511.
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, reuse_address=True,
                           backlog=LISTEN_BACKLOG)
        await site.start()
        self.port = self._runner.addresses[0][1]
        mode = "embedded (in-memory manager, simulated feed)" if self.settings.embedded else "redis"
        logger.info("instance %s listening on http://%s:%d, %s mode%s", self.settings.instance_id,
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
        await self.sio.close_transports(self.settings.shutdown_grace)
        self.gateway.close()
        # Stop background work.
        await cancel(*self._tasks)
        await self.sio.stop_manager()
        await self.sio.stop_admission()
        await self.events.stop()
        await self.access.close()
        await self.states.close()
        # Let the closing transports finish (aiohttp waits for their handlers, up
        # to the grace, then cancels them), then release the port.
        if self._runner is not None:
            await self._runner.cleanup()
        await self.demand.close()
        await self.restarts.aclose()
        await self.backends.market.aclose()
        await self.backends.book_requests.aclose()
        counts = ", ".join(f"{k.value}={v}" for k, v in sorted(self.ingest.counts.items()))
        logger.info("instance %s stopped in %.2fs; closed %d connections; feed ticks: %s", self.settings.instance_id,
                 time.monotonic() - started, connections, counts or "none")

    def _forget(self, asset: str) -> None:
        """The source let go of `asset`'s channel: its latest price and its book are no longer followed."""
        self.book.forget(asset)
        self.books.forget(asset)

    def _watch_assets(self) -> None:
        """Tell the price source which assets this pod needs: any tier or book room of the asset has a member."""
        rooms: Counter[str] = Counter()

        def asset_of(room: str) -> str | None:
            if room.partition(":")[0] not in WATCHED_KINDS:
                return None  # a sid's, user's, role's, channel's or state's room: one check, not four parses
            book = room_book(room.partition("~")[0])  # a book's rate rooms count as the book's
            market = room_market(room.partition("@")[0])
            return book[0] if book is not None else market[1] if market is not None else room_asset(room)

        def occupied(room: str) -> None:
            asset = asset_of(room)
            if asset is not None and room_book(room.partition("~")[0]) is not None:
                self.books.wanted(asset)
            if asset is not None:
                rooms[asset] += 1
                if rooms[asset] == 1:
                    self.source.watch(asset)

        def vacated(room: str) -> None:
            asset = asset_of(room)
            if asset is not None and rooms[asset] > 0:
                rooms[asset] -= 1
                if rooms[asset] == 0:
                    self.source.unwatch(asset)

        self.sio.watch_rooms(occupied, vacated)

    def _local_subscribers(self) -> dict[str, int]:
        """Subscribers per asset on this pod, real-time and delayed tiers and their rates together."""
        rooms = {name: [room for delay in {0, *self.settings.delay_tiers}
                        for room in (tier_room(name, delay), *self.rates.rooms(tier_room(name, delay)))]
                 for name in self.catalog.names}
        sizes = self.sio.room_sizes(room for names in rooms.values() for room in names)
        return {name: sum(sizes[room] for room in names) for name, names in rooms.items()}

    def _metric_state(self) -> State:
        """Where /metrics finds what the parts keep as attributes."""
        return State(
            transports=self.sio.transports,
            subscribers=self._local_subscribers,
            demand=lambda: self.demand.latest,
            feed=self.ingest.counts,
            redis=(*self.source.links(), *self.sio.manager_links(), *self.events.links()),
            manager_messages=self.sio.manager_messages,
            price_channels=self.source.channels,
        )

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down within the grace."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        # The cyclic GC, run every 700 allocations, was a third of fan-out CPU and
        # set the latency tail: keep what start-up built out of its sight, and let
        # the young generation grow (PERFORMANCE.md, finding 3). The process's
        # policy, so here and not in `start`, which tests run in their own process.
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        await stop.wait()
        logger.info("signal received: draining %d connections", len(self.gateway.connections))
        await self.stop()
