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

A replay goes in parts, paced by the connection's writer: each join reads
one page of each room (the oldest entries after its offset, a quarter of
`REALTIME_SLOW_CONSUMER_MAX_BYTES` in all) and sends them; while more
remain, the join waits until the writer has drained and is served again from
where the part ended. A backlog of any size reaches a client that reads, and
one that does not read holds one part, never the whole backlog; a client
dropped halfway reconnects with the offset of the last event it got.

Entries that are not what the append script writes are skipped and counted
(`malformed`); any other failure of the reader is logged and it reads again
from its last offset after a backoff, `connected` (so `/ready`) false meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.backplane.connections import REDIS_ERRORS, Backoff
from realtime.engine.server import SocketServer
from realtime.engine.writer import Writer
from realtime.events import offsets
from realtime.events.log import Entry, EventLog, Page
from realtime.events.offsets import Offset
from realtime.send.delivery import send
from realtime.waits import wait_set

logger = logging.getLogger(__name__)

# A history that cannot be read: Redis unavailable, or an entry written by something else than the script.
HISTORY_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, ValueError)
# How long one read of the log waits for new entries.
READ_WAIT = 1.0
# How long a join may wait for this pod to catch up with the offset it
# starts from (a client that got events through a pod that reads the log
# ahead of this one); a made-up offset cannot hold a connection out longer.
CATCH_UP = 5.0
# Seconds between two looks at the writers of connections whose next replay part waits for them to drain.
PACE = 0.02
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
    paced: bool = False  # a replay in parts: `after` is where the last part ended; due once the writer drained
    condensed: set[str] = field(default_factory=set)  # rooms whose replay `condense` replaced


class LogReader:
    def __init__(self, log: EventLog, sio: SocketServer, *, with_offsets: bool, retry_max: float,
                 part_bytes: int) -> None:
        self.log = log
        self.sio = sio
        self.with_offsets = with_offsets
        self.part_bytes = part_bytes  # the most one part of a replay sends (and one entry more at worst)
        self.backoff = Backoff(cap=retry_max)
        self.failure_backoff = Backoff(cap=retry_max)
        # The last offset delivered to this pod's rooms; None until the log answered once.
        self.position: Offset | None = None
        self.connected = False
        self.reconnects = 0
        self.delivered = 0  # entries that had recipients here
        self.replayed = 0  # entries sent by replays
        self.replays_failed = 0  # connections joined without their replay (Redis unavailable)
        self.malformed = 0  # entries skipped: data not JSON, or not deliverable
        self.failures = 0  # times the reader failed for another reason than Redis, and started again
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
                entries, last = await self.log.read(self.position, READ_WAIT)
                self._reached()
                if last != self.position:
                    async with self._delivering:
                        self._deliver(entries)
                        self.position = last
                    if self._joins:
                        self._wake.set()  # deferred ones may be due now
                self.failure_backoff.reset()
            except REDIS_ERRORS as exc:
                if self.connected or self.backoff.attempts == 0:
                    logger.warning("events: the log is unavailable (%s); retrying, every %.1fs at most",
                                   exc.__class__.__name__, self.backoff.cap)
                await self._again(self.backoff)
            except Exception:
                # Not an outage: a bug, or something in Redis we did not expect. Private events stop on this
                # pod until it reads again, so it says so, counts it, and /ready is 503 meanwhile.
                self.failures += 1
                logger.exception("events: the log reader failed; reading again from %s after a backoff",
                                 self.position)
                await self._again(self.failure_backoff)

    async def _again(self, backoff: Backoff) -> None:
        """After a failure: not connected (for /ready) until the log answers again, after a backoff."""
        self.connected = False
        await asyncio.sleep(backoff.next_delay())
        await self.log.reset()

    def _reached(self) -> None:
        """The log answered: connected again, if it was not."""
        if not self.connected:
            if self.backoff.attempts:
                self.reconnects += 1
            if self.backoff.attempts or self.failure_backoff.attempts:
                logger.info("events: reading the log again from %s", self.position)
            self.connected = True
            self.backoff.reset()

    def _deliver(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            writers = self.sio.room_writers(entry.room)
            if not writers:
                continue
            try:
                args = self._args(entry)
                if args is None:
                    continue
                self.delivered += 1
                send(self.sio, writers, args)
            except Exception:
                # One entry must not stop the log: the reader would meet it again on every restart.
                self.malformed += 1
                logger.exception("events: entry %s of the log could not be delivered; skipped", entry.offset)

    def _args(self, entry: Entry) -> list[Any] | None:
        """The event's arguments: its data, then its offset; None for an entry that is not JSON."""
        try:
            data = orjson.loads(entry.data)
        except orjson.JSONDecodeError:
            # Only the append script writes the log; an entry from anywhere else is skipped.
            self.malformed += 1
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
            await wait_set(self._wake, self._next_look())
            self._wake.clear()
            batch, self._joins = self._joins, []
            async with self._delivering:
                self._joins.extend(self._defer(batch))
                if batch:
                    await self._join_all(batch)

    def _next_look(self) -> float | None:
        """How long joins may wait for a wake-up: a paced replay looks at its writer often."""
        if not self._joins:
            return None
        return PACE if any(join.paced for join in self._joins) else READ_WAIT

    def _defer(self, batch: list[RoomJoin]) -> list[RoomJoin]:
        """Take out of `batch` the joins that are not due yet; return them.

        A paced replay is due once its connection's writer has drained. A join
        that starts past what this pod has delivered waits (up to `CATCH_UP`):
        joined now, the connection would get the entries between this pod's
        position and its offset live, a second time.
        """
        upto = self.position
        now = asyncio.get_running_loop().time()
        later: list[RoomJoin] = []
        for join in batch:
            if join.paced:
                writer = self.sio.writer_of(join.sid)
                if writer is not None and not writer.drained:
                    later.append(join)
            elif upto is not None and join.after is not None and offsets.key(join.after) > offsets.key(upto):
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
        queries = [(room, join.after, self.part_bytes // len(join.rooms))
                   for join in behind if join.after is not None for room in join.rooms]
        found: list[Page] = []
        if queries and upto is not None:
            try:
                found = await self.log.history(queries, upto)
            except HISTORY_ERRORS as exc:
                self.replays_failed += len(behind)
                logger.warning("events: %d connections joined without their replay: the log is unavailable (%s)",
                               len(behind), exc.__class__.__name__)
            except Exception:
                self.replays_failed += len(behind)
                logger.exception("events: %d connections joined without their replay", len(behind))
        pages = iter(found)
        lagging = {id(join) for join in behind}
        replaying = lagging if found else set()
        for done, join in enumerate(batch):
            if done and done % JOIN_SLICE == 0:
                # Thousands of recoveries at once: let the loop breathe (nothing is delivered meanwhile).
                await asyncio.sleep(0)
            mine = [next(pages) for _ in join.rooms] if id(join) in replaying else None
            unread = id(join) in lagging and not found  # the log was unavailable
            try:
                await self._join_one(join, mine, unread)
            except Exception:
                # One connection's failure must not stop the joins of everyone after it.
                logger.exception("events: join of %s failed", join.sid)

    async def _join_one(self, join: RoomJoin, pages: list[Page] | None, unread: bool = False) -> None:
        """Send `join` its replay's next part (a room `condense` answers for gets that instead, once); after
        the last, join it to its rooms and rejoin its assets."""
        if not self.sio.connected(join.sid):
            return  # gone while we read, or while its replay was paced
        writer = self.sio.writer_of(join.sid)
        if join.condense is not None and join.after is not None and not join.paced:
            for i, room in enumerate(join.rooms):
                page = pages[i] if pages is not None else None
                # None: incomplete (unreadable, or more than one part): the room's own rule decides.
                missed = None if unread or (page is not None and page.more) else (page.entries if page else [])
                instead = await join.condense(room, join.after, missed)
                if instead is not None:
                    join.condensed.add(room)
                    for args in instead:
                        if writer is not None:
                            send(self.sio, [writer], args)
        if pages is not None and join.condensed:
            pages = [Page([], False) if room in join.condensed else page for room, page in zip(join.rooms, pages,
                                                                                                strict=True)]
        if writer is not None and pages is not None:
            rest = self._replay(writer, pages)
            if rest is not None:
                join.after, join.paced = rest, True
                self._joins.append(join)
                return
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

    def _replay(self, writer: Writer, pages: list[Page]) -> Offset | None:
        """Send one part of a replay: the pages merged in log order, up to the first page's end that has
        more after it. Returns the offset the next part starts after; None when this was the last."""
        ends = [page.entries[-1].offset for page in pages if page.more and page.entries]
        end = min(ends, key=offsets.key) if ends else None
        replay = sorted((entry for page in pages for entry in page.entries), key=lambda e: offsets.key(e.offset))
        if end is not None:
            replay = [entry for entry in replay if offsets.key(entry.offset) <= offsets.key(end)]
        for entry in replay:
            args = self._args(entry)
            if args is not None:
                send(self.sio, [writer], args)
        self.replayed += len(replay)
        return end
