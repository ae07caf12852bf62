"""What `/metrics` shows of the feed's state per asset, read at scrape time.

Status and last-tick age per asset, feed restarts recognised per asset, and
the delayed tiers' history per tier and asset (records held, bytes
allocated). Nothing here runs on the price path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.feed.prices import PriceBook
from realtime.feed.status import Status


class FeedGauges(Collector):
    """Per-asset feed state of one `PriceBook`."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Metric]:
        statuses = self.book.statuses
        status = GaugeMetricFamily("realtime_asset_status", "1 for the asset's current status (live, stale, halted)",
                                   labels=["asset", "status"])
        for state in statuses.assets.values():
            for value in Status:
                status.add_metric([state.name, value.value], 1 if state.status is value else 0)
        yield status

        age = GaugeMetricFamily("realtime_last_tick_age_seconds",
                                "seconds since the asset's last accepted tick (absent before the first)",
                                labels=["asset"])
        for asset, seconds in statuses.ages(time.monotonic()):
            if seconds is not None:
                age.add_metric([asset], seconds)
        yield age

        restarts = CounterMetricFamily("realtime_feed_restarts", "times an asset's upstream numbering started "
                                       "again (publisher restart, or a run of ticks past a poisoned seq or ts)",
                                       labels=["asset"])
        for asset, count in self.book.restart_counts():
            restarts.add_metric([asset], count)
        yield restarts

        ticks = GaugeMetricFamily("realtime_delayed_history_ticks", "ticks a delayed tier holds for an asset, "
                                  "not yet old enough (at most one per second of the delay)",
                                  labels=["delay", "asset"])
        size = GaugeMetricFamily("realtime_delayed_history_bytes", "memory of a delayed tier's history for an "
                                 "asset (fixed at its first tick: delay + 2 records of 40 bytes)",
                                 labels=["delay", "asset"])
        for delay, asset, held, nbytes in self.book.tiers.memory():
            ticks.add_metric([str(delay), asset], held)
            size.add_metric([str(delay), asset], nbytes)
        yield ticks
        yield size
