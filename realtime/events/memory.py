"""`memory://`: the log and the sessions in this process, for embedded mode.

The same interfaces as Redis (`log.EventLog`, `sessions.SessionStore`), so
a single process and the price board recover the same way a fleet does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from realtime.events import offsets
from realtime.events.log import PAGE_ENTRIES, Entry, Page
from realtime.events.offsets import Offset
from realtime.events.sessions import Session
from realtime.waits import wait_set


class MemoryLog:
    def __init__(self, *, keep: float, clock: Callable[[], float] = time.time) -> None:
        self.keep_ms = int(keep * 1000)
        self.malformed = 0  # stays 0: only `append` writes this log
        self.clock = clock  # wall-clock seconds, as Redis stamps stream entries
        self._log: deque[Entry] = deque()
        self._rooms: dict[str, deque[Entry]] = {}
        self._last = (0, 0)
        self._source: tuple[int, int] | None = None
        self._appended = asyncio.Event()

    async def append(self, room: str, event: str, data: bytes, *, source: str | None = None) -> Offset | None:
        if source is not None:
            if self._source is not None and offsets.key(source) <= self._source:
                return None
            self._source = offsets.key(source)
        now = int(self.clock() * 1000)
        ms, n = self._last
        self._last = (now, 0) if now > ms else (ms, n + 1)
        entry = Entry(f"{self._last[0]}-{self._last[1]}", room, event, data)
        self._log.append(entry)
        self._rooms.setdefault(room, deque()).append(entry)
        self._trim(now - self.keep_ms)
        self._appended.set()
        self._appended = asyncio.Event()
        return entry.offset

    def _trim(self, oldest_ms: int) -> None:
        log = self._log
        while log and offsets.key(log[0].offset)[0] < oldest_ms:
            entry = log.popleft()
            history = self._rooms.get(entry.room)
            if history:
                history.popleft()  # the same entry: both are in log order
                if not history:
                    del self._rooms[entry.room]

    async def announce_keep(self) -> None:
        pass

    async def last(self) -> Offset:
        return self._log[-1].offset if self._log else offsets.ZERO

    async def reset(self) -> None:
        return None  # nothing to reconnect

    async def read(self, after: Offset, wait: float) -> tuple[list[Entry], Offset]:
        entries = self._after(after)
        if not entries:
            await wait_set(self._appended, wait)
            entries = self._after(after)
        return entries, entries[-1].offset if entries else after

    def _after(self, after: Offset) -> list[Entry]:
        start = offsets.key(after)
        newer: list[Entry] = []
        for entry in reversed(self._log):
            if offsets.key(entry.offset) <= start:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    async def history(self, queries: Sequence[tuple[str, Offset, int]], upto: Offset) -> list[Page]:
        end = offsets.key(upto)
        pages: list[Page] = []
        for room, after, budget in queries:
            start = offsets.key(after)
            found: list[Entry] = []
            size = 0
            more = False
            for entry in self._rooms.get(room, ()):
                key = offsets.key(entry.offset)
                if key <= start:
                    continue
                if key > end:
                    break
                cost = size_of(entry)
                if found and (size + cost > budget or len(found) >= PAGE_ENTRIES):
                    more = True
                    break
                found.append(entry)
                size += cost
            pages.append(Page(found, more))
        return pages

    async def close(self) -> None:
        pass


def size_of(entry: Entry) -> int:
    """What `entry` weighs against a page's budget: its size in a Redis room history."""
    return len(entry.offset) + len(entry.event) + len(entry.data) + 4


class MemorySessions:
    def __init__(self, *, window: float, heartbeat: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # seconds, for the expiries Redis keeps as TTLs
        self.window = window
        self.ttl = window + heartbeat
        self._sessions: dict[str, tuple[Session, float]] = {}

    async def create(self, pid: str, session: Session) -> None:
        self._sessions[pid] = (session, self.clock() + self.ttl)

    async def load(self, pid: str) -> Session | None:
        found = self._sessions.get(pid)
        if found is None or found[1] < self.clock():
            return None
        return found[0]

    async def update(self, follow: Mapping[str, Sequence[str]], release: Iterable[str]) -> None:
        now = self.clock()
        for pid, subscriptions in follow.items():
            found = self._sessions.get(pid)
            if found is not None:
                session = found[0]
                self._sessions[pid] = (Session(session.sub, tuple(subscriptions), session.basis), now + self.ttl)
        for pid in release:
            found = self._sessions.get(pid)
            if found is not None:
                self._sessions[pid] = (found[0], now + self.window)

    async def refresh(self, sessions: Mapping[str, Session]) -> None:
        now = self.clock()
        # Forget expired sessions here, so memory stays bounded without a timer per session.
        for pid in [pid for pid, (_, expires) in self._sessions.items() if expires < now]:
            del self._sessions[pid]
        for pid, session in sessions.items():
            found = self._sessions.get(pid)
            self._sessions[pid] = (found[0] if found else session, now + self.ttl)

    async def close(self) -> None:
        pass
