"""Token deadlines: warn a connection shortly before its token expires, end it at expiry.

One event-loop timer per connection (a `TimerHandle`, far lighter than a
sleeping task). A timer that fires starts a short task; `Deadlines` owns both
and cancels them when the connection goes or the gateway closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Notify = Callable[[str, int], Awaitable[None]]


class Deadlines:
    """Per-connection token deadlines.

    A token with `exp` stays valid until `exp + leeway` (the same rule as at
    connect). `on_notice(sid, exp)` runs `notice` seconds before that, at once
    if the token is already that close; `on_expiry(sid, exp)` runs at it.
    """

    def __init__(self, *, notice: float, leeway: float, on_notice: Notify, on_expiry: Notify) -> None:
        self.notice = notice
        self.leeway = leeway
        self.on_notice = on_notice
        self.on_expiry = on_expiry
        self._timers: dict[str, asyncio.Handle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, sid: str, exp: int) -> None:
        """(Re)start the clock of `sid` for a token expiring at `exp` (unix seconds)."""
        self.cancel(sid)
        loop = asyncio.get_running_loop()
        remaining = exp + self.leeway - time.time()
        if remaining > self.notice:
            self._timers[sid] = loop.call_later(remaining - self.notice, self._fire, sid, exp, self.on_notice)
        else:
            self._timers[sid] = loop.call_soon(self._fire, sid, exp, self.on_notice)

    def cancel(self, sid: str) -> None:
        timer = self._timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._timers)

    def close(self) -> None:
        """Cancel every timer and every notice or expiry still running."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()

    def _fire(self, sid: str, exp: int, action: Notify) -> None:
        self._timers.pop(sid, None)
        if action is self.on_notice:
            # The expiry timer comes next; a refresh replaces it through `set`.
            delay = max(0.0, exp + self.leeway - time.time())
            self._timers[sid] = asyncio.get_running_loop().call_later(delay, self._fire, sid, exp, self.on_expiry)
        task = asyncio.create_task(self._run(action, sid, exp), name=f"deadline-{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, action: Notify, sid: str, exp: int) -> None:
        try:
            await action(sid, exp)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("token deadline of %s failed", sid)
