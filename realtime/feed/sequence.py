"""Numbering ticks on the wire: the same `seq` on every pod, rising on every connection, across feed restarts.

Upstream `seq` passes through as the wire `seq` while the publisher keeps
counting up. Every pod consumes the same channel in the same order, so every
decision below depends only on the messages seen, never on a pod's clock or
counter: pods that saw the same feed give a tick the same `seq`, and a client
recovered on another pod keeps its highest-`seq` baseline.

A feed that starts counting again (a restarted publisher) is recognised:

- at once, when its tick has a `ts` newer than the last accepted one while its
  `seq` is not above the last;
- without `ts`, after `RESTART_RUN` rejected ticks in a row whose own `seq`
  (and `ts`, when given) keep rising: a publisher that counts on its own.

A single poisoned message cannot silence an asset: a `seq` that leaps more
than `MAX_JUMP` above the last is held to the same run rule (three rising
ticks from it make it a new numbering, an ordinary next tick drops it), and a
`ts` ahead of this pod's clock that makes honest ticks look old is left behind
by the same run. From a restart on, the wire `seq` is the upstream `seq` plus
an offset chosen so it goes on from the last wire `seq` + 1, so clients that
drop ticks at or below their highest `seq` accept the new ones, and no
upstream leap reaches the wire.

A replay (older `ts` while the last accepted `ts` is not in the future) is
always dropped. Without `ts` a replay of three rising old messages cannot be
told from a restarted publisher: send `ts`.

A feed with `ts` and no `seq` is numbered `ts * 1000 + n` (n: 1 + ticks before
it in the same ms), again the same on every pod; a feed with neither is numbered by the
pod, 1, 2, 3, ...
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.feed.parsing import MAX_SAFE_INTEGER

# Rejected ticks in a row, each above the one before, that make a new numbering.
RESTART_RUN = 3
# A `ts` this much older than the last accepted one is out of order (ms).
TS_TOLERANCE_MS = 1000
# Ticks of one asset in one millisecond a `ts`-only feed may carry.
PER_MS = 1000
# A larger leap of upstream `seq` over the last is suspect until ticks after it confirm it
# (2**32 µs, 71 minutes of a microsecond clock: a publisher down that long confirms itself in 3 ticks).
MAX_JUMP = 2**32


class OutOfOrder(Exception):
    """The tick is older than what was accepted; the message says how."""


@dataclass(slots=True)
class Sequencer:
    """One asset's numbering."""

    last_seq: int = 0  # upstream seq (or its stand-in) of the last accepted tick
    last_ts: int | None = None  # upstream ts of the last accepted tick that had one
    wire: int = 0  # the last seq sent to clients
    offset: int = 0  # wire seq = upstream seq + offset
    restarts: int = 0
    accepted: int = 0  # ticks accepted so far
    _run: int = 0
    _run_seq: int = -1
    _run_ts: int = -1
    _same_ms: int = 0

    def number(self, seq: int | None, ts: int | None, now_ms: int) -> tuple[int, bool]:
        """The wire seq for a tick with upstream `seq` and `ts`, and whether it starts a new numbering.

        Raises `OutOfOrder` for a stale or replayed tick (counting it towards
        a run); `commit` makes an accepted tick the last one.
        """
        if seq is None:
            if ts is None:
                return self.wire + 1, False  # no upstream order at all: this pod counts
            seq = ts * PER_MS + (self._same_ms + 1 if ts == self.last_ts else 0) + 1
        restart = False
        # A replay is older than a last ts that is not in the future: never a restart.
        replay = ts is not None and self.last_ts is not None and ts <= self.last_ts <= now_ms
        if seq <= self.last_seq:
            if ts is not None and self.last_ts is not None and ts > self.last_ts:
                restart = True  # counting again from below, but newer: the publisher restarted
            else:
                restart = self._in_run(seq, ts, f"seq {seq} is not above {self.last_seq}", replay)
        elif ts is not None and self.last_ts is not None and ts < self.last_ts - TS_TOLERANCE_MS:
            restart = self._in_run(seq, ts, f"ts {ts} is older than the last accepted {self.last_ts}", replay)
        elif self.last_seq and seq - self.last_seq > MAX_JUMP:
            restart = self._in_run(seq, ts, f"seq {seq} leaps more than 2**32 over {self.last_seq}", False)
        wire = seq + self.offset
        if restart or wire > MAX_SAFE_INTEGER:
            if self.wire >= MAX_SAFE_INTEGER:
                raise OutOfOrder(f"seq space exhausted at {self.wire}")
            return self.wire + 1, True
        # Never at or below what clients have: a feed that mixes ticks with and without seq.
        return max(wire, self.wire + 1), False

    def _in_run(self, seq: int, ts: int | None, reason: str, replay: bool) -> bool:
        """Count a rejected tick; True when it completes a run that makes a new numbering."""
        if replay:
            self._run = 0
            raise OutOfOrder(reason)
        rising = seq > self._run_seq and (ts is None or ts >= self._run_ts)
        self._run = self._run + 1 if rising and self._run else 1
        self._run_seq, self._run_ts = seq, ts if ts is not None else -1
        if self._run >= RESTART_RUN:
            return True
        raise OutOfOrder(reason)

    def commit(self, seq: int | None, ts: int | None, wire: int, restart: bool) -> None:
        """Make an accepted tick the last one."""
        if seq is None and ts is not None:
            self._same_ms = self._same_ms + 1 if ts == self.last_ts else 0
            seq = ts * PER_MS + self._same_ms + 1
        if restart:
            self.restarts += 1
        if seq is not None:
            self.offset = wire - seq
            self.last_seq = seq
        if ts is not None:
            self.last_ts = ts
        self.wire = wire
        self.accepted += 1
        self._run = 0
        self._run_seq = -1
