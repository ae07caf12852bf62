"""Waiting with a deadline, and stopping tasks, without losing a cancel.

Python 3.11's `asyncio.wait_for` returns normally when what it awaits
completes in the same loop turn as the task is cancelled, and the cancel
is gone (gh-86296, fixed in 3.12). redis-py awaits its writes that way, so
any task that talks to Redis can outlive one cancel: a stop that cancels it
once and awaits it then waits forever (a pod killed at the end of its
grace, a test hung in its teardown). `wait_set` waits without the race;
`cancel` cancels again until the tasks have ended; `together` runs tasks as
`asyncio.TaskGroup` does, but stops them with `cancel` (a TaskGroup cancels
its tasks once, and waits for them for good).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

# Seconds a cancelled task has to end before it is cancelled again: room for the cleanup its cancel runs
# (closing a Redis connection takes milliseconds), short enough that a lost cancel costs a stop little.
RECANCEL = 0.5


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set, at most `timeout` s (None: no limit); whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` and wait until every one has ended; an exception one raised is raised here."""
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL)
    for ended in tasks:
        if ended is not None and not ended.cancelled():
            ended.result()


async def together(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run `coroutines` as tasks until all end, one fails (its exception is raised here) or this is cancelled;
    the others are then stopped with `cancel`, shielded so that a second cancel cannot leave them running."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        await asyncio.shield(cancel(*tasks))
