"""Waiting on an event with a deadline, without losing a cancel.

Python 3.11's `asyncio.wait_for` returns normally when the awaited event
is set in the same loop turn as the task is cancelled, and the cancel is
gone (gh-86296, fixed in 3.12). A background loop that waits that way
can then outlive its cancel and hang a pod's stop until it is killed.
`asyncio.timeout` does not lose it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set, at most `timeout` s (None: no limit); whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
