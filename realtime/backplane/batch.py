"""`Pipelined`: Redis calls made in the same loop turn share one pipeline.

A reconnect storm after a pod dies makes thousands of session reads and
writes at once. One round trip per call would need a connection each
(redis-py's pool refuses past 100) and a round trip each; here the calls of
one loop turn go out as one pipeline, with a bounded number in flight. While
that many are in flight, new calls wait together for the next one: the more
load, the larger the batch, and the fewer pipelines (each costs tens of
microseconds of client CPU besides its commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from realtime.backplane.connections import Client, pipeline
from realtime.waits import cancel

# Pipelines in flight at once, well below redis-py's pool of 100 connections.
IN_FLIGHT = 16

Queue = Callable[[Any], Any]  # adds commands to a pipeline (may return an awaitable)


class Pipelined:
    def __init__(self, redis: Client, in_flight: int = IN_FLIGHT, scripts: Sequence[Any] = (),
                 timeout: float | None = None) -> None:
        self.redis = redis
        # Each pipeline as a whole gives up after `timeout` seconds (for a client whose reads are not
        # bounded one by one, `connections.client(bounded_reads=False)`); a pipeline cut short closes
        # its connection (redis-py drops one interrupted mid-reply), so no late reply is read by another.
        self.timeout = timeout
        self.scripts = scripts  # the registered scripts its calls run (see `backplane.connections.pipeline`)
        self.in_flight = in_flight
        self._running = 0
        self._pending: list[tuple[Queue, int, asyncio.Future[list[Any]]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, queue: Queue, replies: int = 1) -> list[Any]:
        """Run the `replies` commands `queue` adds, in the next pipeline; their replies (raises the first error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((queue, replies, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    async def aclose(self) -> None:
        """End the pipelines still in flight (a stop while Redis hangs), so none outlives its client."""
        with contextlib.suppress(Exception):  # each has ended when `cancel` returns or raises what one raised
            await cancel(*self._tasks)

    def _start(self) -> None:
        self._scheduled = False
        if self._running >= self.in_flight or not self._pending:
            return  # the next pipeline to return starts the calls waiting
        batch, self._pending = self._pending, []
        self._running += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def _run(self, batch: list[tuple[Queue, int, asyncio.Future[list[Any]]]]) -> None:
        try:
            # Reset however it ends (a timeout, a stop), so its connection goes back to the pool.
            async with asyncio.timeout(self.timeout), pipeline(self.redis, self.scripts) as pipe:
                for queue, _, _ in batch:
                    added = queue(pipe)
                    if inspect.isawaitable(added):
                        await added
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for _, replies, future in batch:
            chunk = results[at:at + replies]
            at += replies
            if future.done():
                continue
            error = next((r for r in chunk if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(chunk)
