"""Overload: when the pod falls behind, send fewer price ticks, evenly, instead of queueing.

The pod can fall behind in two places, and either starts an overload:

- its event loop: the lag is how late a short sleep wakes up, since every
  callback the loop has in hand runs before it. A window's verdict goes by its
  second-worst sample, so a lone spike (a garbage collection, one slow
  callback) neither starts an overload nor holds one open, while a loop that
  keeps falling behind (even in bursts: a batch of ticks fanned out at once)
  is late more than once a window;
- its feed (`FeedLag`): a pod that fans out slower than ticks arrive can keep
  its loop turning on time while the backlog waits, unread, in its Redis
  connection. Then even the freshest tick of each sample is older than the
  freshest ticks of the last minute.

Both are judged by a window's second-worst sample; out of overload a window
ends as soon as two samples are past the threshold.

Past `REALTIME_OVERLOAD_LAG` ms in a window (loop lag, or feed lag) the pod caps
every asset's price updates at a rate of `LEVELS` (the first one, then one
step lower per window that still lags), through the rate tiers
(`realtime.send.rates`): every connection of an asset gets the same ticks,
the newest of each interval, so the rate falls evenly. Private events do not
go through the tiers and are never held. After `CALM_WINDOWS` windows under
half the threshold the cap rises one step, and past the top the overload
ends. Start and end are logged and exported; `on_change` tells the clients
the cap that applies to them (`price:rate`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.send.rates import RateTiers

logger = logging.getLogger(__name__)

# The caps, ticks per second per asset, from the first one to the lowest.
LEVELS = (10.0, 5.0, 2.0, 1.0, 0.5, 0.2)
SAMPLE = 0.05  # seconds between two lag samples
WINDOW = 10  # samples per decision (0.5 s)
CALM_WINDOWS = 4  # windows under half the threshold before the cap rises a step (2 s)
FLOOR_WINDOWS = 120  # the feed lag's floor: the freshest tick of the last minute
SAMPLE_TICKS = 2  # ticks a sample needs before its feed lag counts (a quiet feed says nothing about the pod)


def second_worst(samples: list[float]) -> float:
    """One late sample alone is a spike, not a pod falling behind: the second-worst (0 below two)."""
    return sorted(samples)[-2] if len(samples) >= 2 else 0.0


class FeedLag:
    """How far behind its feed the pod reads: the freshest tick of a sample against the freshest of a minute.

    A tick's age when read is the pod's clock less the feed's `ts`. The clocks of feed and pod differ and
    the feed's own latency varies, so the age alone says little: the lag is how much older a sample's
    freshest tick is than the freshest of the last `FLOOR_WINDOWS` windows. A pod that keeps up reads
    some tick of every sample as fresh as ever; a backlog ages all of them.
    """

    def __init__(self) -> None:
        self.freshest = math.inf  # seconds: the youngest tick read in this sample
        self.ticks = 0  # ticks read in this sample
        self.window_freshest = math.inf  # the youngest of this window's samples
        self.floor: deque[float] = deque(maxlen=FLOOR_WINDOWS)  # each past window's youngest
        self.lag = 0.0  # seconds: the last window's verdict (its second-worst sample)

    def read(self, ts_ms: int) -> None:
        """A tick published at `ts_ms` (the feed's clock) was read now."""
        age = time.time() - ts_ms / 1000
        if age < self.freshest:
            self.freshest = age
        self.ticks += 1

    def sample(self) -> float | None:
        """End a sample: how far behind the feed it was read, in seconds (None: too few ticks to tell)."""
        freshest, ticks = self.freshest, self.ticks
        self.freshest, self.ticks = math.inf, 0
        if ticks < SAMPLE_TICKS:
            return None
        self.window_freshest = min(self.window_freshest, freshest)
        return freshest - min(self.window_freshest, min(self.floor, default=math.inf))

    def end_window(self, samples: list[float]) -> float:
        """End a window of `samples` (`sample()`'s): its lag, which goes into the floor."""
        if self.window_freshest < math.inf:
            self.floor.append(self.window_freshest)
        self.window_freshest = math.inf
        self.lag = second_worst(samples)
        return self.lag


class Overload:
    """Measures the loop's lag and the feed's, and sets the rate tiers' ceiling from them."""

    def __init__(self, rates: RateTiers, threshold_ms: float,
                 on_change: Callable[[float | None], None] = lambda ceiling: None, feed: FeedLag | None = None
                 ) -> None:
        self.rates = rates
        self.threshold = threshold_ms / 1000
        self.on_change = on_change
        self.feed = feed or FeedLag()
        self.lag = 0.0  # the worse of the last window's second-worst loop lag and its feed lag: the verdict's
        self.worst = 0.0  # the worst loop lag of the last window, seconds
        self.loop_lag = 0.0  # the second-worst loop lag of the last window, seconds
        self.level = -1  # index in LEVELS; -1: no overload
        self.episodes = 0
        self.seconds = 0.0  # time spent overloaded, ended episodes
        self._since: float | None = None  # monotonic start of the current episode

    def total_seconds(self) -> float:
        """Time spent in overload, the current episode included."""
        since = self._since
        return self.seconds + (time.monotonic() - since if since is not None else 0.0)

    @property
    def ceiling(self) -> float | None:
        return None if self.level < 0 else LEVELS[self.level]

    def decide(self, lag: float) -> None:
        """One window's verdict from its lag (the calm count lives in `run`)."""
        self.lag = lag
        if lag > self.threshold and self.level < len(LEVELS) - 1:
            self._set(self.level + 1)

    def calm(self) -> None:
        """Enough calm windows: one step up, and out of overload past the top."""
        if self.level >= 0:
            self._set(self.level - 1)

    def _set(self, level: int) -> None:
        was = self.level
        self.level = level
        self.rates.ceiling = self.ceiling
        if was < 0:
            self.episodes += 1
            self._since = time.monotonic()
            logger.warning("overload: %s is past REALTIME_OVERLOAD_LAG=%.0f ms; price updates capped at %g per "
                           "second per asset", self._lags(), self.threshold * 1000, self.ceiling)
        elif level < 0:
            lasted = time.monotonic() - (self._since or time.monotonic())
            self.seconds += lasted
            self._since = None
            logger.warning("overload ended after %.1f s: %s; price updates at full rate", lasted, self._lags())
        else:
            logger.info("overload: price updates capped at %g per second per asset (%s)", self.ceiling, self._lags())
        self.on_change(self.ceiling)

    def _lags(self) -> str:
        return f"event-loop lag {self.loop_lag * 1000:.0f} ms, feed read {self.feed.lag * 1000:.0f} ms behind"

    async def run(self) -> None:
        """Sample the lag and decide, until cancelled; does nothing when the threshold is 0 (off)."""
        if self.threshold <= 0:
            return
        loop = asyncio.get_running_loop()
        calm = 0
        while True:
            # A window is WINDOW samples, or half a second with two at least (a loop late by a second each
            # wake-up must not take ten seconds to judge). Out of overload it ends as soon as two samples of
            # either lag are past the threshold: a pod that falls behind is capped within a few samples
            # (once capped, each lower step takes a whole window: a backlog being read still looks late).
            lags: list[float] = []
            behind: list[float] = []
            began = loop.time()
            while len(lags) < WINDOW and (len(lags) < 2 or loop.time() - began < WINDOW * SAMPLE):
                started = loop.time()
                await asyncio.sleep(SAMPLE)
                lags.append(loop.time() - started - SAMPLE)
                feed = self.feed.sample()
                if feed is not None:
                    behind.append(feed)
                if self.level < 0 and max(second_worst(lags), second_worst(behind)) > self.threshold:
                    break
            self.worst = max(lags)
            self.loop_lag = second_worst(lags)
            judged = max(self.loop_lag, self.feed.end_window(behind))
            self.decide(judged)
            if self.level >= 0 and judged < self.threshold / 2:
                calm += 1
                if calm >= CALM_WINDOWS:
                    calm = 0
                    self.calm()
            else:
                calm = 0


class RateGauges(Collector):
    """What `/metrics` shows of the rate tiers and the overload, read at scrape time."""

    def __init__(self, rates: RateTiers, overload: Overload) -> None:
        self.rates = rates
        self.overload = overload

    def collect(self) -> Iterator[Metric]:
        overload = self.overload
        yield GaugeMetricFamily("realtime_event_loop_lag_seconds", "worst event-loop lag of the last half second",
                                value=overload.worst)
        yield GaugeMetricFamily("realtime_feed_lag_seconds", "how much older the freshest tick read was than the "
                                "freshest of the last minute (the last window's second-worst sample)",
                                value=overload.feed.lag)
        yield GaugeMetricFamily("realtime_overload", "1 while the pod caps price updates for overload",
                                value=1 if overload.level >= 0 else 0)
        yield GaugeMetricFamily("realtime_overload_max_rate", "price updates per second per asset under the "
                                "overload cap (0: no cap)", value=overload.ceiling or 0)
        yield CounterMetricFamily("realtime_overload_episodes", "times the pod entered overload",
                                  value=overload.episodes)
        yield CounterMetricFamily("realtime_overload_seconds", "time spent in overload",
                                  value=overload.total_seconds())
        yield GaugeMetricFamily("realtime_rate_tiers", "rate tiers (a room's ticks at a rate) on this pod",
                                value=sum(1 for tier in self.rates.tiers() if tier.rate is not None))
        yield CounterMetricFamily("realtime_price_ticks_held", "ticks a rate tier held for its next interval",
                                  value=self.rates.held)
        yield CounterMetricFamily("realtime_price_ticks_conflated", "held ticks replaced by a newer one "
                                  "before their release (latest value wins)", value=self.rates.replaced)
