"""The shared heartbeat timer on uvloop, which the server runs on (`realtime serve` installs it)."""

from __future__ import annotations

import asyncio
import time

import uvloop

from realtime.engine.heartbeat import Heartbeat


class Slow:
    """A connection whose PING holds the loop, as a busy loop does during a reconnect storm."""

    def __init__(self, heartbeat: Heartbeat, hold: float) -> None:
        self.heartbeat = heartbeat
        self.hold = hold
        self.beat = 0
        self.pings = 0
        self.timed_out = False

    def send_ping(self) -> None:
        self.pings += 1
        time.sleep(self.hold)
        self.heartbeat.start(self)  # the PONG

    def ping_timed_out(self) -> None:
        self.timed_out = True


def test_a_timer_rearmed_for_a_deadline_already_due_keeps_the_heartbeat_going() -> None:
    # uvloop answers a call_at less than a millisecond ahead with a Handle that has no when():
    # a loop held past the next deadline (the first PING takes 30 ms) made the heartbeat fail.
    errors: list[str] = []

    async def main() -> tuple[int, int]:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(str(context)))
        heartbeat = Heartbeat(0.005, 10.0)
        first = Slow(heartbeat, hold=0.03)
        heartbeat.start(first)
        await asyncio.sleep(0.012)
        second = Slow(heartbeat, hold=0.0)
        heartbeat.start(second)
        deadline = time.monotonic() + 5
        while (first.pings < 3 or second.pings < 3) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            heartbeat.start(Slow(heartbeat, hold=0.0))  # new connections keep arriving meanwhile
        heartbeat.close()
        return first.pings, second.pings

    first, second = uvloop.run(main())
    assert errors == []
    assert first >= 3 and second >= 3
