"""What `/metrics` shows of private events, read at scrape time from the counters the reader, the log,
recovery and the stream router keep."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.events.service import Events


class EventGauges(Collector):
    def __init__(self, events: Events) -> None:
        self.events = events

    def collect(self) -> Iterator[Metric]:
        events = self.events
        reader = events.reader
        yield CounterMetricFamily("realtime_events_delivered", "private events of the log delivered to this pod's "
                                  "rooms", value=reader.delivered)
        yield CounterMetricFamily("realtime_events_replayed", "private events replayed to connecting or recovering "
                                  "connections", value=reader.replayed)
        yield CounterMetricFamily("realtime_events_replays_failed", "connections that joined their rooms without "
                                  "their replay because Redis was unavailable", value=reader.replays_failed)
        yield CounterMetricFamily("realtime_events_malformed", "entries of the event log skipped: not what the "
                                  "gateway writes (missing fields, data not JSON or too large)",
                                  value=reader.malformed + events.log.malformed)
        yield CounterMetricFamily("realtime_events_reader_failures", "times the event log reader failed (not a "
                                  "Redis outage) and started again", value=reader.failures)
        recoveries = CounterMetricFamily("realtime_recoveries", "CONNECTs that asked to recover a session, by "
                                         "outcome", labels=["outcome"])
        for outcome, count in events.recovery.outcomes.items():
            recoveries.add_metric([outcome], count)
        yield recoveries
        router = events.router
        if router is not None:
            entries = CounterMetricFamily("realtime_stream_entries", f"entries of the events stream ({router.stream}) "
                                          "by outcome", labels=["outcome"])
            for outcome, count in router.entries.items():
                entries.add_metric([outcome], count)
            yield entries
