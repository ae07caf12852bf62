"""The log reader: the one consumer that decides which private events a connection gets.

Every pod runs one. It follows the log from the offset that was newest when
it started and delivers each entry to this pod's members of its room, with
the offset as the event's last argument, through the one send path
(`realtime.send.delivery.send`, as price ticks): encoded once, framed once,
written to every idle websocket, queued for the others in order. After a
Redis outage it resumes from the last offset it delivered: connected clients
miss nothing that is still in the log.

A connection joins its private rooms through the reader (`join`), never
directly. The reader serves joins while no batch is being delivered, at
a moment when it has delivered everything up to offset P: it reads each of
the connection's room histories for (after, P] (one round trip for all the
joins waiting), sends them in log order, then joins the rooms; all that
follows P reaches the connection live. In order and exactly once, with one
lock between two tasks of one pod and nothing shared across pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from realtime.backplane.connections import REDIS_ERRORS, Backoff
from realtime.engine.server import SocketServer
from realtime.events import offsets
from realtime.events.log import Entry, EventLog
from realtime.events.offsets import Offset
from realtime.send.delivery import send

logger = logging.getLogger(__name__)

# A history that cannot be read: Redis unavailable, or an entry written by something else than the script.
HISTORY_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, ValueError)
# How long one read of the log waits for new entries.
READ_WAIT = 1.0
# How long a join may wait for this pod to catch up with the offset it
# starts from (a client that got events through a pod that reads the log
# ahead of this one); a made-up offset cannot hold a connection out longer.
CATCH_UP = 5.0
# Room joins served per loop iteration.
JOIN_SLICE = 100


@dataclass(slots=True)
class RoomJoin:
    """A connection to join its rooms: replay (after, P] of `rooms` first, then `rejoin` its assets."""

    sid: str
    rooms: list[str]
    after: Offset | None  # None: join without replay
    # Recovery: joins the rooms of the restored subscriptions and returns the events to send then, as
    # packet arguments (the latest prices, channels no longer allowed), read after the joins. The
    # gateway's handlers provide it: they own how an asset's room is named.
    rejoin: Callable[[], Awaitable[list[list[Any]]]] | None = None
    # Recovery: given a room, the client's offset and the room's missed entries (None: unreadable),
    # the events to send instead of that replay (a state's snapshot), or None to replay it.
    condense: Callable[[str, Offset, list[Entry] | None], Awaitable[list[list[Any]] | None]] | None = None
    since: float = 0.0  # loop time it was first deferred


class LogReader:
    def __init__(self, log: EventLog, sio: SocketServer, *, with_offsets: bool, retry_max: float) -> None:
        self.log = log
        self.sio = sio
        self.with_offsets = with_offsets
        self.backoff = Backoff(cap=retry_max)
        # The last offset delivered to this pod's rooms; None until the log answered once.
        self.position: Offset | None = None
        self.connected = False
        self.reconnects = 0
        self.delivered = 0  # entries that had recipients here
        self.replayed = 0  # entries sent by replays
        self.replays_failed = 0  # connections joined without their replay (Redis unavailable)
        self._joins: list[RoomJoin] = []
        self._wake = asyncio.Event()
        self._delivering = asyncio.Lock()

    # Live delivery.

    async def run(self) -> None:
        """Follow the log until cancelled."""
        while True:
            try:
                if self.position is None:
                    self.position = await self.log.last()
                    self._reached()  # at once, not after the first read's wait: /ready follows this
                entries = await self.log.read(self.position, READ_WAIT)
                self._reached()
                if entries:
                    async with self._delivering:
                        self._deliver(entries)
                        self.position = entries[-1].offset
                    if self._joins:
                        self._wake.set()  # deferred ones may be due now
            except REDIS_ERRORS as exc:
                if self.connected or self.backoff.attempts == 0:
                    logger.warning("events: the log is unavailable (%s); retrying, every %.1fs at most",
                                exc.__class__.__name__, self.backoff.cap)
                self.connected = False
                await asyncio.sleep(self.backoff.next_delay())
                await self.log.reset()

    def _reached(self) -> None:
        """The log answered: connected again, if it was not."""
        if not self.connected:
            if self.backoff.attempts:
                self.reconnects += 1
                logger.info("events: reading the log again from %s", self.position)
            self.connected = True
            self.backoff.reset()

    def _deliver(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            writers = self.sio.room_writers(entry.room)
            if not writers:
                continue
            args = self._args(entry)
            if args is None:
                continue
            self.delivered += 1
            send(self.sio, writers, args)

    def _args(self, entry: Entry) -> list[Any] | None:
        """The event's arguments: its data, then its offset; None for an entry that is not JSON."""
        try:
            data = orjson.loads(entry.data)
        except orjson.JSONDecodeError:
            # Only the append script writes the log; an entry from anywhere else is skipped.
            logger.warning("events: entry %s of the log is not JSON; skipped", entry.offset)
            return None
        return [entry.event, data, entry.offset] if self.with_offsets else [entry.event, data]

    # Joining rooms.

    def join(self, join: RoomJoin) -> None:
        """Queue `join`; it is served between two deliveries."""
        self._joins.append(join)
        self._wake.set()

    async def serve(self) -> None:
        """Serve joins until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), READ_WAIT if self._joins else None)
            self._wake.clear()
            batch, self._joins = self._joins, []
            async with self._delivering:
                self._joins.extend(self._defer(batch))
                await self._join_all(batch)

    def _defer(self, batch: list[RoomJoin]) -> list[RoomJoin]:
        """Take out of `batch` the joins that start past what this pod has delivered; return them.

        Joined now, such a connection would get the entries between this
        pod's position and its offset live: a second time.
        """
        upto = self.position
        if upto is None:
            return []
        now = asyncio.get_running_loop().time()
        later: list[RoomJoin] = []
        for join in batch:
            if join.after is not None and offsets.key(join.after) > offsets.key(upto):
                join.since = join.since or now
                if now - join.since < CATCH_UP:
                    later.append(join)
        for join in later:
            batch.remove(join)
        return later

    async def _join_all(self, batch: list[RoomJoin]) -> None:
        # Nothing is delivered while this runs: `upto` is exactly what the rooms have had.
        upto = self.position
        # A connection that starts at `upto` (a fresh one, nothing logged since) has nothing to read.
        behind = [join for join in batch if join.after is not None and upto is not None
                  and offsets.key(join.after) < offsets.key(upto)]
        queries = [(room, join.after) for join in behind if join.after is not None for room in join.rooms]
        found: list[list[Entry]] = []
        if queries and upto is not None:
            try:
                found = await self.log.history(queries, upto)
            except HISTORY_ERRORS as exc:
                self.replays_failed += len(behind)
                logger.warning("events: %d connections joined without their replay: the log is unavailable (%s)",
                               len(behind), exc.__class__.__name__)
        histories = iter(found)
        lagging = {id(join) for join in behind}
        replaying = lagging if found else set()
        for done, join in enumerate(batch):
            if done and done % JOIN_SLICE == 0:
                # Thousands of recoveries at once: let the loop breathe (nothing is delivered meanwhile).
                await asyncio.sleep(0)
            # Per room: its missed entries; None when they could not be read (`condense` then decides).
            replay: list[list[Entry]] | None = [[] for _ in join.rooms]
            if id(join) in replaying:
                replay = [next(histories) for _ in join.rooms]
            elif id(join) in lagging:
                replay = None  # the log was unavailable
            try:
                await self._join_one(join, replay)
            except Exception:
                # One connection's failure must not stop the joins of everyone after it.
                logger.exception("events: join of %s failed", join.sid)

    async def _join_one(self, join: RoomJoin, histories: list[list[Entry]] | None) -> None:
        """Send `join` its replay (or what `condense` gives instead), then join it to its rooms, then rejoin
        its assets."""
        if not self.sio.connected(join.sid):
            return  # gone while we read
        replay: list[Entry] = []
        instead: list[list[Any]] = []
        for i, room in enumerate(join.rooms):
            history = histories[i] if histories is not None else None
            condensed = None
            if join.condense is not None and join.after is not None:
                condensed = await join.condense(room, join.after, history)
            if condensed is not None:
                instead.extend(condensed)
            elif history:
                replay.extend(history)
        writer = self.sio.writer_of(join.sid)
        if writer is not None:
            for args in instead:
                send(self.sio, [writer], args)
        if writer is not None and replay:
            replay.sort(key=lambda entry: offsets.key(entry.offset))
            for entry in replay:
                entry_args = self._args(entry)
                if entry_args is not None:
                    send(self.sio, [writer], entry_args)
            self.replayed += len(replay)
        for room in join.rooms:
            await self.sio.enter_room(join.sid, room)
        if join.rejoin is not None:
            # After the joins: a tick that comes later is sent after this snapshot.
            for args in await join.rejoin():
                if writer is not None:
                    send(self.sio, [writer], args)

    def quiet(self) -> asyncio.Lock:
        """Held, nothing is delivered: a snapshot read then and a room joined then meet the live events
        without a gap (what follows has a later version, or one the client already has)."""
        return self._delivering
