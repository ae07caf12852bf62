"""Waiting on a condition instead of sleeping for a guessed while."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Wait until `predicate()` (sync or async) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        # The poll interval between two checks of the condition, not a wait for something.
        await asyncio.sleep(interval)
