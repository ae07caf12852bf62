"""realtime/waits.py: a background loop that waits on an event with a deadline still ends when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from realtime.waits import wait_set


async def test_a_cancel_that_arrives_as_the_event_is_set_ends_the_loop() -> None:
    # The race that kept a pod's stop waiting until it was killed: on 3.11, `asyncio.wait_for` returns
    # normally here and the loop goes on forever.
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_set(event, 10)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop waits on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, None) is True
