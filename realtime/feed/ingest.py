"""Ingest: from the price source, through validation, to this pod's clients.

Bad messages are dropped and counted by outcome, and logged with one line per
outcome: the log's repeat filter (`realtime.logs`) writes it at most once per
window with the number held back, so a broken upstream cannot flood the logs.
Nothing a message contains stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from realtime.feed.prices import PriceBook, TickOutcome, TickRejected
from realtime.feed.sources import PriceSource
from realtime.metrics import Metrics
from realtime.send.fanout import Fanout

log = logging.getLogger(__name__)

DROPPED = {outcome: f"feed: dropped {outcome.value} tick: %s" for outcome in TickOutcome}


class Ingest:
    def __init__(self, source: PriceSource, book: PriceBook, fanout: Fanout, metrics: Metrics) -> None:
        self.source = source
        self.book = book
        self.fanout = fanout
        self.metrics = metrics
        self.counts: Counter[TickOutcome] = Counter()

    async def run(self) -> None:
        async for raw in self.source.messages():
            try:
                update = self.book.accept(raw)
            except TickRejected as rejected:
                self._drop(rejected)
                continue
            self.counts[TickOutcome.OK] += 1
            try:
                started = time.perf_counter()
                recipients = await self.fanout.send_price(update)
                self.metrics.tick_sent(update, recipients, time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fan-out of %s failed", update["asset"])

    def _drop(self, rejected: TickRejected) -> None:
        self.counts[rejected.outcome] += 1
        # One message template per outcome, so each outcome has its own line in the repeat filter.
        log.warning(DROPPED[rejected.outcome], rejected.reason)
