"""One lean websocket connection: the socket's asyncio protocol and its Engine.IO socket in one object.

See `realtime.engine.lean` for the engine that makes these; a session parses
frames in `data_received` (no task per connection), writes only through its
`Writer`, and is pinged by the engine's one `Heartbeat`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

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
# Seconds a closing websocket waits for the client's close frame.
CLOSE_TIMEOUT = 5.0


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


class WebSocketSession(asyncio.Protocol):
    """One lean websocket connection: the socket's protocol and the Engine.IO socket of its sid."""

    __slots__ = ("_awaiting_pong", "_buffer", "_ending", "_fragments", "_paused", "_receive", "_session", "beat",
                 "closed", "closing", "engine", "inbox", "queue", "sid", "transport")
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
        self._buffer: bytes | None = None  # an incomplete frame
        self._ending: asyncio.TimerHandle | None = None  # our close frame is sent: waiting for the client's
        self._fragments: list[frames.Frame] | None = None  # a fragmented message so far
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
        self._ending = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.close)

    # asyncio's protocol.

    def attach(self, transport: asyncio.Transport, tail: bytes) -> None:
        """Take over `transport` (aiohttp has let it go); `tail` is what it read past the request."""
        self.transport = transport
        transport.set_write_buffer_limits(high=DIRECT_BUFFER_LIMIT)
        transport.set_protocol(self)
        self.queue.attach_stream(self.sid, transport, self)
        self.queue.drain()  # anything sent while the Socket.IO layer accepted the session goes after the OPEN
        if not transport.is_reading():
            transport.resume_reading()
        self.engine.heartbeat.start(self)
        if tail:
            self.data_received(tail)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.queue.drain()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ending is not None:
            self._ending.cancel()
        self.engine.heartbeat.stop(self)
        self._buffer = self._fragments = None
        if self.closed or self.closing:
            self.engine.eio.sockets.pop(self.sid, None)
            return
        reason = self.engine.eio.reason
        self.engine.spawn(self.close(wait=False, abort=True,
                                     reason=reason.TRANSPORT_CLOSE if exc is None else reason.TRANSPORT_ERROR))

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = None
        if self._ending is not None:
            self._closing(data)
            return
        try:
            received, used = frames.parse(data, self.engine.max_message)
            for frame in received:
                if self.transport is None or self.transport.is_closing():
                    return
                self._frame(frame)
        except frames.ProtocolError as error:
            self._fail(error.code)
            return
        if used < len(data):
            self._buffer = data[used:]

    def _closing(self, data: bytes) -> None:
        """After our close frame: everything is dropped until the client's close frame."""
        assert self.transport is not None
        try:
            received, used = frames.parse(data, self.engine.max_message)
        except frames.ProtocolError:
            self.transport.close()
            return
        if any(frame.opcode == frames.CLOSE for frame in received):
            self.transport.close()
        elif used < len(data):
            self._buffer = data[used:]

    # Frames and Engine.IO packets.

    def _frame(self, frame: frames.Frame) -> None:
        opcode = frame.opcode
        if opcode == frames.PING:
            assert self.transport is not None
            self.transport.write(frames.control_frame(frames.PONG, frame.payload))
            return
        if opcode == frames.PONG:
            return
        if opcode == frames.CLOSE:
            self._fail(frames.NORMAL)
            return
        if opcode == frames.CONTINUATION:
            if self._fragments is None:
                raise frames.ProtocolError(frames.PROTOCOL_ERROR, "continuation without a message")
            self._fragments.append(frame)
            if sum(len(f.payload) for f in self._fragments) > self.engine.max_message:
                raise frames.ProtocolError(frames.TOO_BIG, "message too big")
            if not frame.fin:
                return
            fragments, self._fragments = self._fragments, None
            self._message(fragments[0].opcode, b"".join(f.payload for f in fragments))
            return
        if self._fragments is not None:
            raise frames.ProtocolError(frames.PROTOCOL_ERROR, "a new message inside a fragmented one")
        if not frame.fin:
            self._fragments = [frame]
            return
        self._message(opcode, frame.payload)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == frames.BINARY:
            self.engine.dispatch(self, payload)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise frames.ProtocolError(frames.INVALID_DATA, "text is not UTF-8") from None
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
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frames.close_frame(code))
            transport.close()

    # The heartbeat's `Beating`.

    def send_ping(self) -> None:
        self._awaiting_pong = True
        self.queue.put_nowait(PING)

    def ping_timed_out(self) -> None:
        self.engine.spawn(self.close(wait=False, abort=True, reason=self.engine.eio.reason.PING_TIMEOUT))
