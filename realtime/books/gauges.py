"""What `/metrics` shows of the books, read at scrape time from the plain counters `Books` keeps."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.books.messages import BookOutcome
from realtime.books.service import Books


class BookGauges(Collector):
    def __init__(self, books: Books) -> None:
        self.books = books

    def collect(self) -> Iterator[Metric]:
        books = self.books
        messages = CounterMetricFamily("realtime_book_messages", "book messages of the feed, by outcome (gap: "
                                       "dropped while the book waits for a snapshot)", labels=["outcome"])
        for outcome in BookOutcome:
            messages.add_metric([outcome.value], books.outcomes[outcome])
        yield messages
        live = GaugeMetricFamily("realtime_book_live", "1 while the asset's book is live, 0 while it waits for "
                                 "the feed's snapshot", labels=["asset"])
        resynced = CounterMetricFamily("realtime_book_resyncs", "times the asset's book went live again after a "
                                       "gap (a snapshot answered the pod's request)", labels=["asset"])
        conflated = CounterMetricFamily("realtime_book_levels_conflated", "level changes of the feed replaced by "
                                        "a later change of the same level before an update went out",
                                        labels=["asset"])
        updates = CounterMetricFamily("realtime_book_updates", "book:update messages sent (one per room and send, "
                                      "the book room or a rate room: each reaches every subscriber of it here)",
                                      labels=["asset", "depth"])
        for asset, market in books.markets.items():
            live.add_metric([asset], 1 if market.live else 0)
            resynced.add_metric([asset], books.resyncs[asset])
            conflated.add_metric([asset], books.conflated[asset])
            for depth in books.depths:
                updates.add_metric([asset, str(depth)], books.updates[asset, depth])
        yield live
        yield resynced
        yield conflated
        yield updates
