"""realtime/send/overload.py on a real event loop: what starts an overload and what does not.

The loop is held with blocking callbacks (as CPU-bound work holds it); the
verdicts are the overload's own, read from its level and ceiling.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime.send.overload import LEVELS, SAMPLE, WINDOW, Overload
from realtime.send.rates import RateTiers
from realtime.waits import cancel
from tests.support import eventually

WINDOW_SECONDS = SAMPLE * WINDOW

# The verdicts go by how late the test's own loop wakes up: the suite's other workers must not make it late.
pytestmark = pytest.mark.timing


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
