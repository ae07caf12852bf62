"""Socket.IO event handlers: connect, refresh, disconnect (`price:*`: `prices`, `price:rate`: `rates`).

Each handler validates its payload, does its work and answers with an ack.
Every failure is a `GatewayError` mapped to the wire here and nowhere else;
an unexpected exception answers INTERNAL and is logged, so no client input can
crash a handler or leave a half-connected sid behind.

Every client event passes the connection's rate limit first; a connection
that keeps flooding, or whose token expires, gets `session:closed` with the
reason and is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.catalog import Catalog
from realtime.clients.auth import TokenVerifier, extract_token
from realtime.clients.connection import Connection
from realtime.clients.expiry import Deadlines
from realtime.clients.limits import EventLimiter, Verdict
from realtime.clients.rates import Rates
from realtime.cluster.presence import Presence, Slot
from realtime.config import Settings
from realtime.engine import inbound
from realtime.engine.server import SocketServer
from realtime.events.recovery import Condense, Recovery
from realtime.events.sessions import parse_subscription
from realtime.feed.prices import PriceBook
from realtime.logs import log_context
from realtime.metrics import Metrics
from realtime.principal import ANONYMOUS, Principal
from realtime.protocol import (
    AUTH_EXPIRING,
    AUTH_REFRESH,
    PRICE_RATE,
    PRICE_UPDATE,
    SESSION_CLOSED,
    ErrorAck,
    ErrorCode,
    ExpiringEvent,
    GatewayError,
    RefreshAck,
    SessionClosed,
    ack_error,
    error_body,
    refusal,
)
from realtime.rooms import role_room, room_book, room_market, user_room
from realtime.send.rates import RateTiers

logger = logging.getLogger(__name__)

# How long an ended connection may take to flush its last packets.
END_FLUSH_TIMEOUT = 5.0


Handler = Callable[..., Awaitable[Any]]
# What a module with events of its own (sessions.books) does on recovery and on a refreshed token.
Rejoin = Callable[[Connection], Awaitable[None]]
Entitle = Callable[[Connection, Principal], Awaitable[None]]
# Recovery of channel and state rooms (clients.channels): keeps those of a connection's recovered rooms
# it may still have, before it joins them.
Vet = Callable[[Connection, list[str]], Awaitable[list[str]]]


class Gateway:
    """Owns the connections of this pod and answers their events."""

    def __init__(
        self,
        sio: SocketServer,
        settings: Settings,
        verifier: TokenVerifier,
        catalog: Catalog,
        book: PriceBook,
        metrics: Metrics,
        presence: Presence,
        recovery: Recovery,
        rates: RateTiers,
    ) -> None:
        self.sio = sio
        self.connections: dict[str, Connection] = {}
        self.rates = Rates(sio, settings, rates, recovery, self.connections)
        self.metrics = metrics
        self.presence = presence
        self.recovery = recovery
        self.settings = settings
        self.verifier = verifier
        self.catalog = catalog
        self.book = book
        self.instance_id = settings.instance_id
        self.accepting = True
        self.deadlines = Deadlines(notice=settings.auth_expiry_notice, leeway=settings.jwt_leeway,
                                   on_notice=self._warn_expiring, on_expiry=self._expire)
        self._ending: set[asyncio.Task[None]] = set()
        self._rejoins: list[Rejoin] = []
        self._entitles: list[Entitle] = []
        self._vet: Vet | None = None
        self._condense: Condense | None = None

        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on(AUTH_REFRESH, self._acked(AUTH_REFRESH, self.refresh))
        sio.on(PRICE_RATE, self._acked(PRICE_RATE, self.rates.change_all))
        sio.on(inbound.INVALID_EVENT, self._acked(inbound.INVALID_EVENT, self.invalid_event))
        self._answer_unknown = self._acked("*", self.unknown_event)
        sio.on("*", self.on_unknown_event)
        sio.guard_inbound()

    def handle(self, event: str, handler: Handler) -> None:
        """Answer `event` with `handler(conn, *args)`, acked and rate-limited like every event."""
        self.sio.on(event, self._acked(event, handler))

    def extend(self, *, rejoin: Rejoin | None = None, entitle: Entitle | None = None) -> None:
        """Also run `rejoin` when a connection recovers and `entitle` when its token is refreshed."""
        if rejoin is not None:
            self._rejoins.append(rejoin)
        if entitle is not None:
            self._entitles.append(entitle)

    def recover_rooms(self, vet: Vet, condense: Condense) -> None:
        """How recovered channel and state rooms are vetted before they are joined, and their replays
        condensed (`RoomJoin`)."""
        self._vet = vet
        self._condense = condense

    def follow(self, conn: Connection) -> None:
        """Record the connection's subscriptions (assets with their rates, books, channels and states) with its
        recoverable session."""
        self.rates.follow(conn)

    def close(self) -> None:
        """Cancel every token timer and every ending still flushing (server shutdown)."""
        self.deadlines.close()
        for task in self._ending:
            task.cancel()

    # Connect and disconnect.

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            principal = self._authenticate(environ, auth)
            if not self.accepting:
                # Close the transport rather than refuse: socket.io-client retries a transport
                # close (and lands on another pod), but takes any connect_error as final.
                await self.sio.close_transport(sid)
                raise GatewayError(ErrorCode.UNAVAILABLE, "this instance is shutting down")
            if len(self.connections) >= self.settings.max_connections:
                raise GatewayError(ErrorCode.TOO_MANY_CONNECTIONS, "this instance is full")
            # The Engine.IO session's: a namespace DISCONNECT + CONNECT does not refill it.
            limiter = self.sio.engine_scoped(sid, lambda: EventLimiter(
                self.settings.event_rate, self.settings.event_burst, self.settings.event_abuse_limit,
                self.settings.event_abuse_window))
            self.connections[sid] = Connection(sid, principal, limiter)
            if principal.exp is not None:
                self.deadlines.set(sid, principal.exp)
            # Private rooms are joined through the event log's reader, after the CONNECT reply and any replay.
            rooms = [] if principal.sub is None else [user_room(principal.sub), *map(role_room, principal.roles)]
            conn = self.connections[sid]
            vet = self._vet
            for restored in await self.recovery.connect(
                    sid, principal, auth, rooms, lambda: self._rejoin(conn),
                    vet=None if vet is None else lambda asked: vet(conn, asked), condense=self._condense):
                if room_book(restored):
                    conn.books.add(restored)
                    continue
                if room_market(restored):
                    conn.markets.add(restored)
                    continue
                if ":" in restored:
                    continue  # a channel's or a state's room: `vet` recorded it
                # Recovery keeps each subscription's rate, within what the new token and the cap allow.
                asset, rate = parse_subscription(restored)
                conn.subscriptions.add(asset)
                self.rates.set(conn, asset, self.rates.grant(principal, rate))
            if principal.sub is not None:
                for slot in await self.presence.admit(principal.sub, sid):
                    await self._close_replaced(slot)
        except GatewayError as error:
            self._forget(sid)
            self.metrics.refused(error.code.value)
            with log_context(sid=sid):
                logger.debug("refused: %s", error.code.value)
            raise refusal(error) from None
        except Exception:
            # python-socketio gives the client no reply for any other exception
            # and leaves the sid half-connected forever: always refuse with a code.
            with log_context(sid=sid):
                logger.exception("connect handler failed")
            self._forget(sid)
            self.metrics.refused(ErrorCode.INTERNAL.value)
            raise refusal(GatewayError(ErrorCode.INTERNAL, "internal error")) from None
        self.metrics.connected()
        if logger.isEnabledFor(logging.DEBUG):  # a context per connect costs more than the line it logs
            with log_context(sid=sid, user=principal.sub):
                logger.debug("connected")

    def _authenticate(self, environ: dict[str, Any], auth: Any) -> Principal:
        token = extract_token(environ, auth)
        if token is None:
            if self.settings.allow_anonymous:
                return ANONYMOUS
            raise GatewayError(ErrorCode.AUTH_REQUIRED, "a token is required")
        return self.verifier.verify(token)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        connection = self._forget(sid)
        if connection is not None:
            self.metrics.disconnected(reason)
            if logger.isEnabledFor(logging.DEBUG):
                with log_context(sid=sid, user=connection.principal.sub):
                    logger.debug("disconnected: %s", reason)
            if connection.principal.sub is not None:
                await self.presence.leave(connection.principal.sub, sid)

    def _forget(self, sid: str) -> Connection | None:
        self.deadlines.cancel(sid)
        self.recovery.forget(sid)
        return self.connections.pop(sid, None)

    # Ending a connection here: the reason first, then the namespace, then the transport.

    def end(self, conn: Connection, error: GatewayError) -> None:
        """End `conn` in the background with `session:closed` {code, message}; the gateway owns the task."""
        if conn.ending:
            return
        conn.ending = True
        self.metrics.session_ended(error.code.value)
        task = asyncio.create_task(self._end(conn.sid, error), name=f"end-{conn.sid}")
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _end(self, sid: str, error: GatewayError) -> None:
        # Locally, never through the manager's queue: the reason must precede the disconnect.
        await self.sio.emit(SESSION_CLOSED, error_body(error.code, error.message), to=sid, ignore_queue=True)
        await self.sio.end_session(sid, END_FLUSH_TIMEOUT)
        with log_context(sid=sid):
            logger.info("ended: %s", error.code.value)

    async def _warn_expiring(self, sid: str, exp: int) -> None:
        if sid in self.connections:
            notice: ExpiringEvent = {"exp": exp}
            await self.sio.emit(AUTH_EXPIRING, notice, to=sid, ignore_queue=True)

    async def _expire(self, sid: str, exp: int) -> None:
        conn = self.connections.get(sid)
        if conn is not None:
            self.end(conn, GatewayError(ErrorCode.AUTH_EXPIRED, f"the token expired at {exp}; refresh it in time"))

    async def _close_replaced(self, slot: Slot) -> None:
        """Close a user's oldest connection past the cap, on whichever pod holds it.

        The reason goes first; then a namespace disconnect, which tells
        socket.io-client not to reconnect (it would only evict the newer one).
        To a sid on another pod both travel through the manager, in order.
        """
        cap = self.settings.max_connections_per_user
        reason: SessionClosed = {"code": ErrorCode.TOO_MANY_CONNECTIONS.value,
                                 "message": f"at most {cap} connections per user: this one, the oldest, is closed"}
        await self.sio.emit(SESSION_CLOSED, reason, to=slot.sid)
        await self.sio.disconnect(slot.sid)

    # Events. Each returns its ack or raises GatewayError.

    def _acked(self, event: str, handler: Handler) -> Handler:
        """Wrap a handler so it always answers with an ack, whatever it is sent.

        The one place every acked event passes: counted by name and ack code,
        and logged with the connection's sid and user.
        """

        async def answer(sid: str, *args: Any) -> Any:
            connection = self.connections.get(sid)
            with log_context(sid=sid, user=connection.principal.sub if connection else None):
                try:
                    if connection is None:
                        raise GatewayError(ErrorCode.INTERNAL, "connection is not registered")
                    self._spend(connection)
                    ack = await handler(connection, *args)
                    self.metrics.client_event(event, "ok")
                    return ack
                except GatewayError as error:
                    self.metrics.client_event(event, error.code.value)
                    return ack_error(error)
                except Exception:
                    logger.exception("handler %s failed", handler.__name__)
                    self.metrics.client_event(event, ErrorCode.INTERNAL.value)
                    return ack_error(GatewayError(ErrorCode.INTERNAL, "internal error"))

        answer.__name__ = handler.__name__
        return answer

    def _spend(self, conn: Connection) -> None:
        """Spend one event from the connection's budget, or raise RATE_LIMITED (and end it on abuse)."""
        verdict = conn.limiter.check()
        if verdict is Verdict.ALLOW:
            return
        if verdict is Verdict.CUT:
            self.end(conn, GatewayError(ErrorCode.RATE_LIMITED, "too many events for too long; connection closed"))
        raise GatewayError(ErrorCode.RATE_LIMITED, "too many events; slow down")

    async def _rejoin(self, conn: Connection) -> list[list[Any]]:
        """Recovery: join the rooms of `conn`'s restored subscriptions; their latest prices, read after the
        joins, and the notices of what was not restored."""
        # The connection's tier (a `delay` claim): delayed rooms and delayed snapshots, never real-time ones.
        delay = conn.principal.delay
        for name in sorted(conn.subscriptions):
            await self.rates.join(conn, name)
        for rejoin in self._rejoins:
            await rejoin(conn)
        notices = conn.take_notices()
        prices = [p for p in (self.book.latest(name, delay) for name in sorted(conn.subscriptions)) if p is not None]
        return [*notices, *([PRICE_UPDATE, price] for price in prices)]

    async def refresh(self, conn: Connection, payload: Any = None, *_: Any) -> RefreshAck:
        if not isinstance(payload, dict) or not isinstance(payload.get("token"), str):
            raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"token": "<jwt>"}')
        principal = self.verifier.verify(payload["token"])
        if conn.principal.sub is None or principal.sub != conn.principal.sub:
            raise GatewayError(ErrorCode.FORBIDDEN, "the new token is for another subject")
        if principal.delay != conn.principal.delay:
            raise GatewayError(ErrorCode.FORBIDDEN, "the new token is for another delay tier; reconnect with it")
        await self._apply_entitlements(conn, principal)
        assert principal.exp is not None
        self.deadlines.set(conn.sid, principal.exp)
        return {"ok": True, "exp": principal.exp}

    async def _apply_entitlements(self, conn: Connection, principal: Principal) -> None:
        """Make rooms follow a refreshed token: roles and asset rights may have changed."""
        for role in conn.principal.roles - principal.roles:
            await self.sio.leave_room(conn.sid, role_room(role))
        for role in principal.roles - conn.principal.roles:
            await self.sio.enter_room(conn.sid, role_room(role))
        for asset in [a for a in conn.subscriptions if not principal.may_see(a)]:
            conn.subscriptions.discard(asset)
            await self.sio.leave_room(conn.sid, self.rates.room(conn, asset))
            conn.rates.pop(asset, None)
        for entitle in self._entitles:
            await entitle(conn, principal)
        conn.principal = principal
        # A lower maxRate claim lowers the grants at once; a higher one waits for the next request.
        for asset in list(conn.subscriptions):
            granted = conn.rates.get(asset)
            capped = self.rates.grant(principal, granted)
            if capped != granted:
                await self.rates.change(conn, asset, capped)
        await self.rates.rerate(conn)
        self.follow(conn)

    async def invalid_event(self, conn: Connection, *_: Any) -> ErrorAck:
        raise GatewayError(ErrorCode.BAD_REQUEST, "an event name is a string other than connect, disconnect or *")

    async def on_unknown_event(self, event: str, sid: str, *_: Any) -> ErrorAck:
        # python-socketio's catch-all handler receives the event name first.
        answer: ErrorAck = await self._answer_unknown(sid, event)
        return answer

    async def unknown_event(self, conn: Connection, event: str) -> ErrorAck:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"unknown event {event[:64]!r}")
