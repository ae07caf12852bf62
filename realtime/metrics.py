"""Prometheus metrics: one registry per `Server`, served at `GET /metrics`.

One idiom for every metric of the gateway: a part keeps plain numbers (ints,
`Tally`, `Buckets`) and a `Collector` class exports them at scrape time, so
no part makes a Prometheus call and no hot path takes a lock. Events the
gateway sees once (a connect, an acked client event, a fan-out tick) are
counted here as they happen (`ClientStats`, `TickStats`), with labels from
small fixed sets: never a user, a sid or a room. State and counters that
other parts keep as attributes (ingest outcomes, Redis reconnects, rooms)
are read by `StateCollector`; a package with metrics of its own has its
collector beside it (`engine.gauges`, `events.gauges`, `feed.gauges`,
`books.gauges`, `trades.gauges`, `RateGauges`, `HookGauges`, `AddressGauges`).

The price hot path pays two bucket look-ups per tick that reaches a client
(`tick_sent`, kept as plain numbers in `TickStats`), never anything per
delivery.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from realtime import __version__
from realtime.protocol import (
    AUTH_REFRESH,
    BOOK_SNAPSHOT,
    BOOK_SUBSCRIBE,
    BOOK_UNSUBSCRIBE,
    CANDLES_SUBSCRIBE,
    CANDLES_UNSUBSCRIBE,
    CHANNEL_SUBSCRIBE,
    CHANNEL_UNSUBSCRIBE,
    PRICE_RATE,
    PRICE_SUBSCRIBE,
    PRICE_UNSUBSCRIBE,
    STATE_SUBSCRIBE,
    STATE_UNSUBSCRIBE,
    TRADES_SUBSCRIBE,
    TRADES_UNSUBSCRIBE,
    PriceUpdate,
    TickOutcome,
)

# Label values for client events: the events we answer, everything else is "other".
KNOWN_EVENTS = frozenset({PRICE_SUBSCRIBE, PRICE_UNSUBSCRIBE, PRICE_RATE, AUTH_REFRESH, BOOK_SUBSCRIBE, BOOK_SNAPSHOT,
                          BOOK_UNSUBSCRIBE, CHANNEL_SUBSCRIBE, CHANNEL_UNSUBSCRIBE, STATE_SUBSCRIBE, STATE_UNSUBSCRIBE,
                          TRADES_SUBSCRIBE, TRADES_UNSUBSCRIBE, CANDLES_SUBSCRIBE, CANDLES_UNSUBSCRIBE})
OTHER = "other"
# python-socketio's disconnect reasons; anything new upstream is counted as "other".
DISCONNECT_REASONS = frozenset({"client disconnect", "server disconnect", "ping timeout",
                                "transport close", "transport error"})

# Fan-out of one tick to this pod's subscribers: microseconds to a second.
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Upstream `ts` to the socket write: includes Redis, ingest and the fan-out.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class RedisLink:
    """One Redis connection as metrics see it: is it up, how often it came back."""

    component: str
    up: Callable[[], bool]
    reconnects: Callable[[], int]


@dataclass(frozen=True, slots=True)
class State:
    """Where `StateCollector` reads what other parts keep as attributes."""

    transports: Callable[[], Iterable[str]]  # "websocket" or "polling" per Engine.IO connection
    subscribers: Callable[[], Mapping[str, int]]  # asset -> this pod's subscribers
    demand: Callable[[], Mapping[str, int]]  # asset -> subscribers across all pods
    feed: Mapping[TickOutcome, int]
    redis: tuple[RedisLink, ...] = ()
    manager_messages: Callable[[], tuple[int, int] | None] = lambda: None  # (in, out) through Redis
    price_channels: Callable[[], Iterable[tuple[str, str]]] = lambda: ()  # (layout, channel) held now


class StateCollector(Collector):
    """Reads the gateway's state at scrape time."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        connections = GaugeMetricFamily("realtime_connections", "Engine.IO connections by transport",
                                        labels=["transport"])
        by_transport = {"websocket": 0, "polling": 0}
        for transport in state.transports():
            by_transport[transport] += 1
        for transport, count in by_transport.items():
            connections.add_metric([transport], count)
        yield connections

        subscribers = GaugeMetricFamily("realtime_subscribers", "this pod's subscribers per asset", labels=["asset"])
        for asset, count in state.subscribers().items():
            subscribers.add_metric([asset], count)
        yield subscribers

        demand = GaugeMetricFamily("realtime_demand_subscribers",
                                   "subscribers per asset across all pods, as last read from the demand store",
                                   labels=["asset"])
        for asset, count in state.demand().items():
            demand.add_metric([asset], count)
        yield demand

        feed = CounterMetricFamily("realtime_feed_messages", "price feed messages by outcome", labels=["outcome"])
        for outcome in TickOutcome:
            feed.add_metric([outcome.value], state.feed.get(outcome, 0))
        yield feed

        if state.redis:
            up = GaugeMetricFamily("realtime_redis_up", "1 while the Redis connection is up", labels=["component"])
            reconnects = CounterMetricFamily("realtime_redis_reconnects", "times Redis came back after a failure",
                                             labels=["component"])
            for link in state.redis:
                up.add_metric([link.component], 1 if link.up() else 0)
                reconnects.add_metric([link.component], link.reconnects())
            yield up
            yield reconnects

        held = GaugeMetricFamily("realtime_price_channels_held", "1 for each price channel this pod listens to now "
                                 "(layout: single or per-asset)", labels=["layout", "channel"])
        for layout, channel in state.price_channels():
            held.add_metric([layout, channel], 1)
        yield held

        manager_messages = state.manager_messages()
        if manager_messages is not None:
            received, sent = manager_messages
            messages = CounterMetricFamily("realtime_manager_messages", "python-socketio manager messages via Redis",
                                           labels=["direction"])
            messages.add_metric(["in"], received)
            messages.add_metric(["out"], sent)
            yield messages



class Buckets:
    """A histogram as plain numbers: observing costs a bisect and two additions.

    prometheus-client's `Histogram` takes a lock for the bucket and one for the
    sum: two of them and a counter cost ~3 µs per tick in isolation against
    ~1.5 µs for this. The event loop is one thread and scrapes run on it, so
    no lock is needed here.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class Tally:
    """A counter as plain numbers per label values, with the time each series began.

    Counting is a dict update; the owner's collector exports it at scrape time
    (`family`) with the `_created` sample prometheus-client's `Counter` writes.
    A series exists from its first count, or from the start when named here
    (`Tally(())`: the one series of a counter without labels).
    """

    __slots__ = ("counts", "created")

    def __init__(self, *series: tuple[str, ...]) -> None:
        self.counts: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}
        for labels in series:
            self.add(labels, 0)

    def add(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        if labels not in self.counts:
            self.counts[labels] = 0
            self.created[labels] = time.time()
        self.counts[labels] += amount

    def family(self, name: str, documentation: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for values, count in self.counts.items():
            family.add_metric(values, count, created=self.created[values])
        return family


def histogram(name: str, documentation: str, buckets: Buckets, created: float) -> HistogramMetricFamily:
    """`buckets` as a histogram without labels, with the `_created` sample of prometheus-client's `Histogram`."""
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets.cumulative(), buckets.total)
    family.samples.append(Sample(f"{name}_created", {}, created))
    return family


class TickStats(Collector):
    """What the price hot path records, kept as plain numbers and exported at scrape time."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.fanout = Buckets(FANOUT_BUCKETS)
        self.latency: dict[str, Buckets] = {}

    def sent(self, update: PriceUpdate, recipients: int, seconds: float) -> None:
        self.deliveries += recipients
        self.fanout.observe(seconds)
        asset = update["asset"]
        latency = self.latency.get(asset)
        if latency is None:
            latency = self.latency[asset] = Buckets(LATENCY_BUCKETS)
        # Clamp: an upstream clock ahead of ours must not make negative observations.
        latency.observe(max(0.0, time.time() - update["ts"] / 1000))

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("realtime_price_deliveries", "price:update messages handed to clients",
                                  value=self.deliveries)
        fanout = HistogramMetricFamily("realtime_fanout_duration_seconds",
                                       "fan-out of one tick to this pod's subscribers (ticks nobody here watches "
                                       "are not observed)")
        fanout.add_metric([], self.fanout.cumulative(), self.fanout.total)
        yield fanout
        latency = HistogramMetricFamily("realtime_tick_to_wire_seconds",
                                        "upstream tick ts to the end of this pod's fan-out, per asset",
                                        labels=["asset"])
        for asset, buckets in self.latency.items():
            latency.add_metric([asset], buckets.cumulative(), buckets.total)
        yield latency


class ClientStats(Collector):
    """What the gateway counts as it happens: connects, disconnects, refusals, ended sessions, client events,
    API requests; and its build."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.connects = Tally(())
        self.disconnects = Tally()  # by reason
        self.refusals = Tally()  # by code
        self.sessions_ended = Tally()  # by code
        self.client_events = Tally()  # by event and code
        self.api_requests = Tally()  # by route and status

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("realtime_build_info", "version and instance of this gateway",
                                 labels=["version", "instance"])
        info.add_metric([__version__, self.instance_id], 1)
        yield info
        yield self.connects.family("realtime_connects", "connections accepted")
        yield self.disconnects.family("realtime_disconnects", "disconnections by reason", ["reason"])
        yield self.refusals.family("realtime_connect_refusals", "connections refused, by error code", ["code"])
        yield self.sessions_ended.family("realtime_sessions_ended", "connections the gateway ended, by reason code "
                                         "(RATE_LIMITED: flooding, AUTH_EXPIRED: token not refreshed, ...)", ["code"])
        yield self.client_events.family("realtime_client_events", "client events by name and ack code ('ok')",
                                        ["event", "code"])
        yield self.api_requests.family("realtime_api_requests", "HTTP API requests by route and status",
                                       ["route", "status"])


class Metrics:
    """The registry of one server and the events counted as they happen."""

    def __init__(self, instance_id: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.clients = ClientStats(instance_id)
        self.registry.register(self.clients)
        self.ticks = TickStats()
        self.registry.register(self.ticks)

    def watch(self, state: State) -> None:
        """Export `state` at every scrape."""
        self.registry.register(StateCollector(state))

    # Hot path: once per tick, whatever the number of recipients.

    def tick_sent(self, update: PriceUpdate, recipients: int, seconds: float) -> None:
        """Count one fanned-out tick: its deliveries, its fan-out time, its age on the wire."""
        if recipients:
            self.ticks.sent(update, recipients, seconds)

    # Connections and client events.

    def connected(self) -> None:
        self.clients.connects.add()

    def refused(self, code: str) -> None:
        self.clients.refusals.add((code,))

    def disconnected(self, reason: Any) -> None:
        self.clients.disconnects.add((reason if reason in DISCONNECT_REASONS else OTHER,))

    def session_ended(self, code: str) -> None:
        self.clients.sessions_ended.add((code,))

    def client_event(self, event: str, code: str) -> None:
        self.clients.client_events.add((event if event in KNOWN_EVENTS else OTHER, code))

    def api_request(self, route: str, status: int) -> None:
        self.clients.api_requests.add((route, str(status)))

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /metrics`: Prometheus text, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.handle)]
