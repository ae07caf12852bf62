"""One timer for the Engine.IO heartbeat of every lean websocket connection.

Engine.IO v4 as Node's engine.io runs it: `ping_interval` after the handshake
or the last PONG the server sends PING; without a PONG within `ping_timeout`
the connection is dropped ("ping timeout"). python-engineio keeps a task and
a sleep per connection for this; 50 000 connections do not need 50 000 timers.
Every connection waits the same interval (and the same timeout), so a
deadline set now is never earlier than one set before: two FIFO queues of
(deadline, connection, beat) stay sorted by construction, and one timer
handle, armed for the earliest deadline, serves them all. An entry whose
`beat` no longer matches its connection's (a PONG came, the connection
closed) is skipped when its time comes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

# Deadlines this close together fire in one timer run (fewer wake-ups under load).
SLACK = 0.01


class Beating(Protocol):
    """A connection the heartbeat drives."""

    beat: int  # changes whenever its heartbeat state changes; stale entries are skipped

    def send_ping(self) -> None: ...

    def ping_timed_out(self) -> None: ...


class Heartbeat:
    """Pings every connection `interval` after its last PONG; drops it `timeout` after an unanswered PING."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._pings: deque[tuple[float, Beating, int]] = deque()
        self._timeouts: deque[tuple[float, Beating, int]] = deque()
        # uvloop answers a `call_at` less than a millisecond ahead with a plain Handle (no `when()`):
        # the deadline the timer was armed for is kept here.
        self._timer: asyncio.Handle | None = None
        self._when = 0.0
        self.timed_out = 0  # connections dropped for not answering a ping

    def __len__(self) -> int:
        return len(self._pings) + len(self._timeouts)

    def start(self, connection: Beating) -> None:
        """Schedule the next PING (after the handshake, or after a PONG)."""
        connection.beat += 1
        self._add(self._pings, connection)

    def stop(self, connection: Beating) -> None:
        """Forget `connection` (closed): its entries go stale."""
        connection.beat += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pings.clear()
        self._timeouts.clear()

    def _add(self, queue: deque[tuple[float, Beating, int]], connection: Beating) -> None:
        loop = asyncio.get_running_loop()
        delay = self.interval if queue is self._pings else self.timeout
        deadline = loop.time() + delay
        queue.append((deadline, connection, connection.beat))
        self._arm(loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make the timer fire by `deadline` (plus the slack)."""
        if self._timer is not None:
            if self._when <= deadline + SLACK:
                return
            self._timer.cancel()
        self._when = deadline + SLACK
        self._timer = loop.call_at(self._when, self._run)

    def _run(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        pings, timeouts = self._pings, self._timeouts
        while timeouts and timeouts[0][0] <= now:
            _, connection, beat = timeouts.popleft()
            if connection.beat == beat:
                connection.beat += 1
                self.timed_out += 1
                connection.ping_timed_out()
        while pings and pings[0][0] <= now:
            _, connection, beat = pings.popleft()
            if connection.beat == beat:
                connection.beat += 1
                self._add(timeouts, connection)
                connection.send_ping()
        for queue in (pings, timeouts):
            if queue:
                self._arm(loop, queue[0][0])
