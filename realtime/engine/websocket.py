"""One lean websocket connection: the socket's asyncio protocol and its Engine.IO socket in one object.

See `realtime.engine.lean` for the engine that makes these; a session parses
frames in `data_received` (no task per connection), writes only through its
`Writer`, and is pinged by the engine's one `Heartbeat`.

Reading follows writing: while the transport's write buffer is full, while
`INBOX_LIMIT` messages wait for their handler, and for one loop turn after
`EVENTS_PER_TURN` messages, the socket is not read and what was read is not
parsed. So a client that sends without reading (pings, say) is only answered
as fast as it reads, and one connection's burst cannot hold the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web
from engineio import packet as eio_packet

from realtime.engine import frames
from realtime.engine.heartbeat import Heartbeat
from realtime.engine.writer import DIRECT_BUFFER_LIMIT, Writer

logger = logging.getLogger(__name__)

PING = eio_packet.Packet(eio_packet.PING)  # one shared packet: encoded once
CLOSE = eio_packet.Packet(eio_packet.CLOSE)
# What the connect handler may still need from the environ after the Socket.IO CONNECT.
KEPT_ENVIRON = ("REMOTE_ADDR", "QUERY_STRING", "HTTP_AUTHORIZATION")

MessageHandler = Callable[[str, Any], Awaitable[Any]]
# Messages of one connection waiting for the one being handled, past which its socket is not read.
INBOX_LIMIT = 64
# Seconds a closing websocket waits for the client's close frame, or for a paused writer to drain.
CLOSE_TIMEOUT = 5.0
# Messages and control frames handled in one go before the loop gets a turn (~1-2 µs each).
EVENTS_PER_TURN = 256


class Hijacked(web.StreamResponse):
    """What the handler returns to aiohttp for a connection it no longer owns: nothing is written."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class Engine(Protocol):
    """What a session needs of the engine that accepted it (`realtime.engine.lean.LeanEngine`)."""

    eio: Any  # python-engineio's server (a `ConformingServer`)
    heartbeat: Heartbeat
    max_message: int

    def spawn(self, coroutine: Awaitable[Any]) -> None: ...

    def dispatch(self, session: WebSocketSession, data: str | bytes) -> None: ...

    def lost(self, session: WebSocketSession, reason: Any) -> None: ...


class WebSocketSession(asyncio.Protocol):
    """One lean websocket connection: the socket's protocol and the Engine.IO socket of its sid."""

    __slots__ = ("_awaiting_pong", "_dropping", "_ending", "_paused", "_reader", "_receive", "_session", "_yielding",
                 "beat", "closed", "closing", "engine", "inbox", "queue", "sid", "transport")
    # As python-engineio's sockets say of a websocket session.
    connected = True
    upgraded = True
    upgrading = False

    def __init__(self, engine: Engine, sid: str, queue: Writer) -> None:
        self.engine = engine
        self.sid = sid
        self.queue = queue
        self.transport: asyncio.Transport | None = None
        self.beat = 0
        self.closing = False
        self.closed = False
        self._awaiting_pong = False
        self._paused = False
        self._yielding = False  # parsing waits for the next loop turn
        self._reader: frames.Reader | None = None  # while something is partly received
        self._dropping = False  # what the client sends is dropped unread
        self._ending: asyncio.TimerHandle | None = None  # our close frame is sent: waiting for the client's
        self._receive: Any = None
        self._session: dict[str, Any] | None = None
        # None while no message is being handled; else the messages waiting for it, in order.
        self.inbox: list[str | bytes] | None = None

    # python-engineio's socket API.

    @property
    def server(self) -> Any:
        return self.engine.eio

    @property
    def session(self) -> dict[str, Any]:
        if self._session is None:
            self._session = {}
        return self._session

    @session.setter
    def session(self, value: dict[str, Any]) -> None:
        self._session = value

    @property
    def receive(self) -> Any:
        """Packets are read in `data_received`; an override (the inbound guard installs one) is kept, unused."""
        return self._receive

    @receive.setter
    def receive(self, value: Any) -> None:
        self._receive = value

    async def send(self, pkt: eio_packet.Packet) -> None:
        self.queue.put_nowait(pkt)

    async def check_ping_timeout(self) -> bool:
        return not self.closed  # the shared heartbeat drops silent clients

    def schedule_ping(self) -> None:
        pass  # the shared heartbeat pings

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """End the session: the disconnect handlers run, CLOSE is sent unless `abort`, the websocket is closed.

        Never waits for a paused writer's queue to drain (`wait` is accepted, not honoured): the frames
        already handed to the socket are sent before it closes, and a client that does not read cannot
        hold its session open.
        """
        if self.closed or self.closing:
            return
        self.closing = True
        self.engine.heartbeat.stop(self)
        eio = self.engine.eio
        await eio._trigger_event("disconnect", self.sid, reason or eio.reason.SERVER_DISCONNECT, run_async=False)
        if not abort:
            self.queue.put_nowait(CLOSE)
        self.closed = True
        eio.sockets.pop(self.sid, None)
        self.queue.put_nowait(None)  # ends the websocket after what is queued
        if self._paused:
            # A client that does not read would hold its socket (and what is queued for it) for ever.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._expire)

    # The writer's `Stream`.

    @property
    def paused(self) -> bool:
        return self._paused

    def end(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._ending is not None:
            return
        transport.write(frames.close_frame(frames.NORMAL))
        # RFC 6455's closing handshake: the socket is closed once the client answers (or CLOSE_TIMEOUT
        # passes). Closing it at once, with client data still unread, resets the connection, and the
        # client may lose the frames we sent last (session:closed, the CLOSE packet).
        self._ending = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._expire)

    def _expire(self) -> None:
        """CLOSE_TIMEOUT after the end: close the socket, or abort it if what we sent is still not read."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    # asyncio's protocol.

    def attach(self, transport: asyncio.Transport, tail: bytes) -> None:
        """Take over `transport` (aiohttp has let it go); `tail` is what it read past the request."""
        self.transport = transport
        transport.set_write_buffer_limits(high=DIRECT_BUFFER_LIMIT)
        transport.set_protocol(self)
        self.queue.attach_stream(self.sid, transport, self)
        self.queue.drain()  # anything sent while the Socket.IO layer accepted the session goes after the OPEN
        self.engine.heartbeat.start(self)
        if tail:
            self.data_received(tail)
        else:
            self.read()

    def pause_writing(self) -> None:
        self._paused = True
        self.read()  # stops reading

    def resume_writing(self) -> None:
        self._paused = False
        self.queue.drain()
        self.read()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ending is not None:
            self._ending.cancel()
        self.engine.heartbeat.stop(self)
        self._reader = None  # what was read goes
        self._dropping = True
        if self.closed or self.closing:
            self.engine.eio.sockets.pop(self.sid, None)
            return
        reason = self.engine.eio.reason
        self.engine.lost(self, reason.TRANSPORT_CLOSE if exc is None else reason.TRANSPORT_ERROR)

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        if self._reader is None:
            self._reader = frames.Reader(self.engine.max_message)
        self._reader.feed(data)
        self.read()

    # Reading.

    def readable(self) -> bool:
        """Whether what the client sent may be parsed now (see the module's docstring)."""
        inbox = self.inbox
        return not (self._paused or self._yielding or (inbox is not None and len(inbox) >= INBOX_LIMIT))

    def read(self) -> None:
        """Handle what was read while `readable()`, then read the socket or not, as `readable()` says."""
        transport = self.transport
        if transport is None:
            return
        budget = EVENTS_PER_TURN
        while self.readable() and not transport.is_closing() and self._reader is not None:
            try:
                message = self._reader.next()
            except frames.ProtocolError as error:
                self._reader = None
                if self._ending is None:
                    self._fail(error.code)
                else:
                    self._dropping = True  # waiting for the client's close frame: the rest is dropped unread
                return
            if message is None:
                if self._reader.idle:
                    self._reader = None  # most connections, most of the time: ~100 bytes each
                break
            self._handle(message)
            budget -= 1
            if not budget:
                self._yielding = True
                asyncio.get_running_loop().call_soon(self._next_turn)
                break
        if transport.is_closing():
            return
        if self.readable():
            if not transport.is_reading():
                transport.resume_reading()
        elif transport.is_reading():
            transport.pause_reading()

    def _next_turn(self) -> None:
        self._yielding = False
        self.read()

    # Frames and Engine.IO packets.

    def _handle(self, message: frames.Message) -> None:
        opcode, data = message
        if self.closed or self._ending is not None:
            # The session is over (our close frame may be sent): everything is dropped until the client's.
            if opcode == frames.CLOSE:
                assert self.transport is not None
                self.transport.close()
            return
        if opcode == frames.PING:
            self.queue.put_frame(frames.control_frame(frames.PONG, cast(bytes, data)))
        elif opcode == frames.CLOSE:
            # The client's close: answered with its code, and the socket closed (RFC 6455 §5.5.1).
            transport = self.transport
            assert transport is not None
            if self.queue.put_last(frames.close_frame(frames.close_code(cast(bytes, data)) or frames.NORMAL)):
                transport.close()
            else:
                transport.abort()
        elif opcode != frames.PONG:
            self._message(opcode, data)

    def _message(self, opcode: int, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.engine.dispatch(self, data)
            return
        text = data
        kind = text[:1]
        if kind == "4":
            self.engine.dispatch(self, text[1:])
        elif kind == "3":
            if self._awaiting_pong:
                self._awaiting_pong = False
                self.engine.heartbeat.start(self)
        elif kind == "1":
            # The client's CLOSE: its session ends now and the websocket with it.
            self.engine.spawn(self.close(wait=False, abort=True, reason=self.engine.eio.reason.CLIENT_DISCONNECT))
            self.end()
        # PING, OPEN, UPGRADE, NOOP and empty messages are not a client's to send: dropped.

    def _fail(self, code: int) -> None:
        """Fail the websocket (RFC 6455 §7.1.7): our close frame with `code` and a FIN, then what the client
        still sends is dropped unread until its EOF or CLOSE_TIMEOUT. Aborted at once if the client is not
        reading (what we sent is still queued).

        Closing the socket at once would reset it while the client's data is unread, and the client would
        likely lose the close frame that says why; after a protocol error its stream cannot be parsed on.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.queue.put_last(frames.close_frame(code)):
            transport.abort()
            return
        self._reader = None
        self._dropping = True
        if transport.can_write_eof():
            transport.write_eof()
        self._ending = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._expire)

    # The heartbeat's `Beating`.

    def send_ping(self) -> None:
        self._awaiting_pong = True
        self.queue.put_nowait(PING)

    def ping_timed_out(self) -> None:
        self.engine.lost(self, self.engine.eio.reason.PING_TIMEOUT)
