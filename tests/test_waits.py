"""realtime/waits.py: loops that wait on an event with a deadline, and tasks run together, still end when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from realtime.waits import cancel, together, wait_set


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


async def test_cancel_cancels_again_a_task_that_ran_on_after_its_cancel() -> None:
    # The lost cancel, as redis-py's writes lose it on 3.11: the task swallows the first cancel and goes on.
    stubborn = 0

    async def runs_on() -> None:
        nonlocal stubborn
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                stubborn += 1
                if stubborn > 1:
                    raise

    task = asyncio.create_task(runs_on())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel(task, None), 2)
    assert task.cancelled() and stubborn == 2


async def test_cancel_raises_what_a_task_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await cancel(task)


async def stubborn(started: asyncio.Event) -> None:
    """A task that loses its first cancel, as one in redis-py can (3.11's wait_for, gh-86296)."""
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(30)


async def test_together_stops_a_task_that_lost_its_first_cancel() -> None:
    # asyncio.TaskGroup cancels its tasks once: this group would wait for the stubborn one for good.
    started = asyncio.Event()
    running = asyncio.create_task(together(stubborn(started), asyncio.sleep(30)))
    await started.wait()
    async with asyncio.timeout(5):
        await cancel(running)
    assert running.cancelled()


async def test_together_raises_what_a_task_raised_and_stops_the_others() -> None:
    started = asyncio.Event()

    async def fails() -> None:
        await started.wait()
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        async with asyncio.timeout(5):
            await together(stubborn(started), fails())
