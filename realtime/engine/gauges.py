"""What `/metrics` shows of the engine, read at scrape time: the writers' cuts and collapses, request heads,
the sessions admission closed, and the emits the manager could not publish."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.engine.heads import Heads
from realtime.engine.server import SocketServer
from realtime.engine.writer import Writers


class EngineGauges(Collector):
    def __init__(self, sio: SocketServer, writers: Writers, heads: Heads) -> None:
        self.sio = sio
        self.writers = writers
        self.heads = heads

    def collect(self) -> Iterator[Metric]:
        writers, heads, admission = self.writers, self.heads, self.sio.admission
        yield CounterMetricFamily("realtime_slow_consumers_cut", "connections cut for not reading their messages",
                                  value=writers.cut)
        yield CounterMetricFamily("realtime_price_ticks_collapsed", "queued price ticks replaced by a newer one of "
                                  "the same asset", value=writers.collapsed)
        yield GaugeMetricFamily("realtime_request_heads", "connections sending a request head now (slowloris shows "
                                "here)", value=heads.pending)
        yield CounterMetricFamily("realtime_request_heads_timed_out", "connections answered 408 and closed for not "
                                  "sending a request head in time", value=heads.timed_out)
        yield CounterMetricFamily("realtime_request_heads_refused", "connections closed at once with 503: the pod "
                                  "held its cap of sessions and connections sending a head", value=heads.refused)
        yield CounterMetricFamily("realtime_connect_timeouts", "Engine.IO sessions closed for want of a successful "
                                  "CONNECT in time", value=admission.timed_out)
        yield CounterMetricFamily("realtime_connect_floods", "Engine.IO sessions closed for sending too many CONNECT "
                                  "packets", value=admission.flooded)
        yield CounterMetricFamily("realtime_binary_packets", "Engine.IO sessions closed for sending a binary packet",
                                  value=admission.binary)
        dropped = self.sio.manager_dropped()
        if dropped is not None:
            yield CounterMetricFamily("realtime_manager_publish_dropped", "emits that reached only this pod's "
                                      "clients because Redis was down", value=dropped)
