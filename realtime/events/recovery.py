"""Connection state recovery for the stock socket.io-client (`socket.recovered`).

At connect, `Recovery.connect` decides what a connection gets. A CONNECT
whose auth carries a `pid` (socket.io-client adds `{pid, offset}` beside the
app's token, which is verified as for any connect) recovers when the session
exists, is within the window and belongs to the token's `sub`: the same pid
in the reply, every private event after the client's offset (or after the
session's basis when it sent none), the asset and book subscriptions the
new token still allows, then the latest price of each (and a `book:snapshot`
of each book, `sessions.books`). Anything else gets a new
session with a new pid and nothing of the old one. The session is written
before the CONNECT reply; with Redis down the connection is accepted
without a pid.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Any

from realtime.backplane.connections import REDIS_ERRORS
from realtime.catalog import Catalog
from realtime.engine.server import SocketServer
from realtime.events import offsets
from realtime.events.log import Entry, EventLog
from realtime.events.offsets import Offset
from realtime.events.reader import LogReader, RoomJoin
from realtime.events.sessions import MAX_PID, Session, SessionStore, new_pid, parse_subscription, subscription
from realtime.principal import Principal
from realtime.protocol import AUTH_OFFSET, AUTH_PID
from realtime.rooms import book_room, room_book, room_market
from realtime.waits import wait_set

logger = logging.getLogger(__name__)


Condense = Callable[[str, Offset, list[Entry] | None], Awaitable[list[list[Any]] | None]]


class Outcome(StrEnum):
    """What became of a CONNECT that asked to recover a pid."""

    RECOVERED = "recovered"
    EXPIRED = "expired"  # unknown, or past the window
    FOREIGN = "foreign"  # another user's session
    DISABLED = "disabled"  # REALTIME_RECOVERY_WINDOW=0, or an anonymous connection
    UNAVAILABLE = "unavailable"  # Redis could not be asked


def heartbeat_period(window: float) -> float:
    """How often a pod refreshes its sessions' TTL."""
    return min(30.0, max(0.5, window / 4))


class Recovery:
    """Sessions of this pod's connections, and the joins that follow from them."""

    def __init__(self, sio: SocketServer, log: EventLog, sessions: SessionStore, reader: LogReader,
                 catalog: Catalog, *, window: float, max_subscriptions: int) -> None:
        self.sio = sio
        self.log = log
        self.sessions = sessions
        self.reader = reader
        self.catalog = catalog
        self.window = window
        self.max_subscriptions = max_subscriptions
        self.heartbeat = heartbeat_period(window)
        # CONNECTs that asked to recover a session, by outcome (`realtime_recoveries`).
        self.outcomes: Counter[str] = Counter({outcome.value: 0 for outcome in Outcome})
        # sid -> (pid, session) of this pod's recoverable connections: the heartbeat writes a
        # session back whole when Redis lost it (a restart, a failover).
        self.here: dict[str, tuple[str, Session]] = {}
        # pid -> how many of `here` hold it (one, but for a recovery that beat its old connection's
        # disconnect): a disconnect asks it in O(1), and 10 000 of them at once do not hold the loop.
        self._holders: dict[str, int] = {}
        # Session writes that may wait for the next flush (the newest wins).
        self._follow: dict[str, tuple[str, ...]] = {}
        self._release: set[str] = set()
        self._dirty = asyncio.Event()

    async def connect(self, sid: str, principal: Principal, auth: Any, rooms: list[str],
                      rejoin: Callable[[], Awaitable[list[list[Any]]]], *,
                      vet: Callable[[list[str]], Awaitable[list[str]]] | None = None,
                      condense: Condense | None = None) -> list[str]:
        """Prepare `sid`'s CONNECT reply and join; return the subscriptions it recovers.

        `rejoin` joins the rooms of the connection's subscriptions (by then, the recovered ones) and
        returns the events to send then (their latest prices); it runs after the replay. `vet` keeps the
        recovered rooms (channels, states: `:` in the name) the connection may still have; they are
        replayed, through `condense` (see `RoomJoin`), and joined.
        """
        asked = _asked_pid(auth)
        if self.window <= 0 or principal.sub is None:
            if asked is not None:
                self.outcomes[Outcome.DISABLED.value] += 1
            self._prepare(sid, None, RoomJoin(sid, rooms, None))
            return []
        pid: str | None = None
        after: offsets.Offset | None = None
        restored: list[str] = []
        kept: list[str] = []
        outcome: Outcome | None = None
        try:
            if asked is not None:
                session = await self.sessions.load(asked)
                if session is None:
                    outcome = Outcome.EXPIRED
                elif session.sub != principal.sub:
                    outcome = Outcome.FOREIGN
                else:
                    outcome = Outcome.RECOVERED
                    pid = asked
                    client_offset = offsets.parse(auth.get(AUTH_OFFSET))
                    after = offsets.later(client_offset, session.basis) if client_offset else session.basis
                    restored = self._allowed(session.subscriptions, principal)
                    asked_rooms = [name for name in session.subscriptions if ":" in name]
                    if asked_rooms and vet is not None:
                        kept = await vet(asked_rooms)
                        restored += kept
                    self._follow[pid] = tuple(restored)  # the new token's rights, and a fresh TTL
                    self._dirty.set()
                    self._hold(sid, pid, Session(session.sub, tuple(restored), session.basis))
            basis = self.reader.position
            if pid is None and basis is not None:
                pid = new_pid()
                fresh = Session(principal.sub, (), basis)
                await self.sessions.create(pid, fresh)
                self._hold(sid, pid, fresh)
                after = basis  # what is published before it joins its rooms reaches it too
        except REDIS_ERRORS as exc:
            logger.warning("recovery: Redis unavailable (%s); connection accepted without a session",
                        exc.__class__.__name__)
            outcome = Outcome.UNAVAILABLE if asked is not None else None
            pid, after, restored, kept = None, None, [], []
            self._let_go(sid)
        if outcome is not None:
            self.outcomes[outcome.value] += 1
        recovered = outcome is Outcome.RECOVERED
        self._prepare(sid, pid, RoomJoin(sid, [*rooms, *kept], after, rejoin if recovered else None,
                                         condense if recovered else None))
        return restored

    def _prepare(self, sid: str, pid: str | None, join: RoomJoin) -> None:
        start: Callable[[], None] = lambda: self.reader.join(join)  # noqa: E731
        self.sio.prepare_connect_reply(sid, pid, start)

    def _allowed(self, recorded: Iterable[str], principal: Principal) -> list[str]:
        """The recorded subscriptions the new token allows: assets (each with its rate,
        `sessions.subscription`), book rooms `book:<A>:<depth>`, and trade and candle rooms."""
        allowed: dict[str, str] = {}
        books: list[str] = []
        markets: list[str] = []
        for entry in recorded:
            book = room_book(entry)
            market = room_market(entry)
            if market is not None:
                asset = self.catalog.get(market[1])
                # Trades are real-time only; the trade handlers check the interval.
                if (asset is not None and principal.may_see(asset.name) and entry not in markets
                        and not (market[0] == "trades" and principal.delay)):
                    markets.append(entry)
                continue
            name, rate = (book[0], None) if book is not None else parse_subscription(entry)
            asset = self.catalog.get(name)
            if asset is None or not principal.may_see(asset.name):
                continue
            if book is None:
                if asset.name not in allowed:
                    allowed[asset.name] = subscription(asset.name, rate)
            elif not principal.delay and book_room(asset.name, book[1]) not in books:
                books.append(book_room(asset.name, book[1]))  # books are real-time only
        cap = self.max_subscriptions
        return list(allowed.values())[:cap] + books[:cap] + markets[:cap]

    def follow(self, sid: str, subscriptions: Iterable[str]) -> None:
        """The connection's subscriptions changed: record them with its session (soon, in one batch)."""
        found = self.here.get(sid)
        if found is not None:
            pid, session = found
            names = tuple(sorted(subscriptions))
            self.here[sid] = (pid, Session(session.sub, names, session.basis))
            self._follow[pid] = names
            self._dirty.set()

    def forget(self, sid: str) -> None:
        """The connection is gone: its session stays recoverable for exactly the window."""
        pid = self._let_go(sid)
        if pid is not None and pid not in self._holders:
            self._release.add(pid)
            self._dirty.set()

    def _hold(self, sid: str, pid: str, session: Session) -> None:
        if self.here.get(sid, ("",))[0] != pid:
            self._let_go(sid)
            self._holders[pid] = self._holders.get(pid, 0) + 1
        self.here[sid] = (pid, session)

    def _let_go(self, sid: str) -> str | None:
        """Take `sid` out of `here`; the pid it held."""
        found = self.here.pop(sid, None)
        if found is None:
            return None
        pid = found[0]
        if self._holders[pid] <= 1:
            del self._holders[pid]
        else:
            self._holders[pid] -= 1
        return pid

    # Background work: the writes above, and the heartbeat.

    async def run(self) -> None:
        """Write session changes as they come, and refresh this pod's sessions every heartbeat."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            await wait_set(self._dirty, max(0.0, next_beat - loop.time()))
            self._dirty.clear()
            try:
                await self.flush()
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self.heartbeat
                    await self.sessions.refresh(dict(self.here.values()))
                    await self.log.announce_keep()
            except REDIS_ERRORS as exc:
                logger.warning("recovery: could not write sessions (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(min(self.heartbeat, 1.0))

    async def flush(self) -> None:
        """Write the session changes waiting (raises on a Redis error, keeping them)."""
        follow, self._follow = self._follow, {}
        release, self._release = self._release, set()
        if not follow and not release:
            return
        try:
            await self.sessions.update(follow, release)
        except REDIS_ERRORS:
            # Keep what was not written (newer values win) for the next attempt.
            self._follow = {**follow, **self._follow}
            self._release |= release
            raise


def _asked_pid(auth: Any) -> str | None:
    if not isinstance(auth, dict):
        return None
    pid = auth.get(AUTH_PID)
    return pid if isinstance(pid, str) and 0 < len(pid) <= MAX_PID else None
