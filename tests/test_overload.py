"""realtime/send/overload.py on a real event loop: what starts an overload and what does not.

The loop is held with blocking callbacks (as CPU-bound work holds it), and a
feed is read late by stamping ticks in the past (as a backlog ages them); the
verdicts are the overload's own, read from its level and ceiling.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime.send.overload import LEVELS, SAMPLE, SAMPLE_TICKS, WINDOW, FeedLag, Overload
from realtime.send.rates import RateTiers
from realtime.waits import cancel
from tests.support import eventually

WINDOW_SECONDS = SAMPLE * WINDOW

# The verdicts go by how late the test's own loop wakes up: the suite's other workers must not make it late.
pytestmark = pytest.mark.timing


def now_ms() -> int:
    return int(time.time() * 1000)


def window(feed: FeedLag, behind_ms: int, ticks: int = SAMPLE_TICKS, samples: int = WINDOW) -> float:
    """One window of `samples` samples of `ticks` ticks, each read `behind_ms` after it was stamped; the
    window's feed lag."""
    lags = []
    for _ in range(samples):
        for _ in range(ticks):
            feed.read(now_ms() - behind_ms)
        lag = feed.sample()
        if lag is not None:
            lags.append(lag)
    return feed.end_window(lags)


def test_a_feed_read_later_and_later_lags_by_how_much_later() -> None:
    feed = FeedLag()
    assert window(feed, 5) < 0.005
    assert 0.39 < window(feed, 400) < 0.41  # 395 ms later than the freshest of the minute
    assert window(feed, 5) < 0.005  # caught up


def test_one_late_sample_is_not_a_lag() -> None:
    # Judged like the loop: by the second-worst sample of a window.
    feed = FeedLag()
    assert window(feed, 5) < 0.005
    lags = []
    for behind_ms in (5, 400, 5, 5):
        feed.read(now_ms() - behind_ms)
        feed.read(now_ms() - behind_ms)
        lags.append(feed.sample())
    assert lags[1] is not None and lags[1] > 0.39
    assert feed.end_window([lag for lag in lags if lag is not None]) < 0.005


def test_a_feed_clock_ahead_or_behind_is_not_a_lag() -> None:
    # Another host's clock, or a feed's own latency: every tick equally old (or from the future).
    for offset_ms in (5_000, -3_000):
        feed = FeedLag()
        assert [round(window(feed, offset_ms), 2) for _ in range(5)] == [0.0] * 5


def test_a_quiet_feed_says_nothing_about_the_pod() -> None:
    # A tick or none a sample (a slow asset, a replayed price) is not a backlog.
    feed = FeedLag()
    assert window(feed, 5) < 0.005
    assert window(feed, 10_000, ticks=SAMPLE_TICKS - 1) == 0.0


async def test_a_pod_behind_its_feed_is_capped_though_its_loop_is_on_time() -> None:
    # The backlog waits in the Redis connection, not in the loop: every tick read is older than the last.
    watched, changes = overload()
    running = asyncio.create_task(watched.run())
    behind_ms = 0

    async def feed() -> None:
        nonlocal behind_ms
        while True:
            for _ in range(5):
                watched.feed.read(now_ms() - behind_ms)
            behind_ms += 10  # 10 ms more behind every 10 ms: reading at half the rate ticks arrive
            await asyncio.sleep(0.01)

    feeding = asyncio.create_task(feed())
    try:
        await eventually(lambda: watched.ceiling is not None, timeout=6 * WINDOW_SECONDS)
        assert changes == [LEVELS[0]] and watched.loop_lag < watched.threshold
        assert watched.feed.lag > watched.threshold
    finally:
        await cancel(feeding, running)


def overload(threshold_ms: float = 30) -> tuple[Overload, list[float | None]]:
    changes: list[float | None] = []
    rates = RateTiers(None)  # type: ignore[arg-type]  # the tiers are only told the ceiling here
    return Overload(rates, threshold_ms, on_change=changes.append), changes


async def test_a_loop_that_keeps_falling_behind_is_capped_evenly_then_freed() -> None:
    watched, changes = overload()
    running = asyncio.create_task(watched.run())
    loop = asyncio.get_running_loop()
    held = True

    def hold() -> None:
        if held:
            time.sleep(0.1)
            loop.call_later(0.02, hold)

    loop.call_soon(hold)
    try:
        await eventually(lambda: watched.ceiling is not None, timeout=6 * WINDOW_SECONDS)
        assert changes[0] == LEVELS[0] and watched.rates.ceiling == watched.ceiling
        held = False
        # Calm again: one step up per CALM_WINDOWS, and out past the top.
        await eventually(lambda: watched.ceiling is None, timeout=30)
        assert watched.episodes == 1 and changes[-1] is None and watched.rates.ceiling is None
    finally:
        held = False
        await cancel(running)


async def test_a_lone_spike_is_not_an_overload() -> None:
    # A garbage collection or one slow callback: late once, then on time.
    watched, changes = overload()
    running = asyncio.create_task(watched.run())
    loop = asyncio.get_running_loop()
    worst = 0.0
    try:
        for _ in range(3):
            loop.call_soon(time.sleep, 0.2)
            for _ in range(WINDOW):
                await asyncio.sleep(SAMPLE)
                worst = max(worst, watched.worst)
        for _ in range(2 * WINDOW):
            await asyncio.sleep(SAMPLE)
            worst = max(worst, watched.worst)
        assert worst >= 0.15  # seen, and exported as the window's worst
        assert watched.ceiling is None and watched.episodes == 0 and changes == []
    finally:
        await cancel(running)
