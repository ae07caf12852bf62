"""Ingest: from the price source, through validation, to this pod's clients.

Bad messages are dropped and counted by outcome; they are logged at most once
per `LOG_EVERY` seconds per outcome with the number suppressed, so a broken
upstream cannot flood the logs. Nothing a message contains stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from .fanout import Fanout
from .metrics import Metrics
from .prices import PriceBook, TickOutcome, TickRejected
from .sources import PriceSource

log = logging.getLogger("realtime.ingest")

LOG_EVERY = 10.0


class Ingest:
    def __init__(self, source: PriceSource, book: PriceBook, fanout: Fanout, metrics: Metrics) -> None:
        self.source = source
        self.book = book
        self.fanout = fanout
        self.metrics = metrics
        self.counts: Counter[TickOutcome] = Counter()
        self._last_logged: dict[TickOutcome, float] = {}
        self._suppressed: Counter[TickOutcome] = Counter()

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
        outcome = rejected.outcome
        self.counts[outcome] += 1
        now = time.monotonic()
        if now - self._last_logged.get(outcome, -LOG_EVERY) < LOG_EVERY:
            self._suppressed[outcome] += 1
            return
        more = self._suppressed.pop(outcome, 0)
        log.warning("feed: dropped %s tick: %s%s", outcome.value, rejected.reason,
                    f" (and {more} more since the last report)" if more else "")
        self._last_logged[outcome] = now
