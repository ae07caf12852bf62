"""The lean Engine.IO websocket engine (`REALTIME_ENGINE=lean`).

python-engineio keeps, per websocket connection, aiohttp's request, response,
reader and handler task, a WSGI environ, a writer task, a reader loop that
makes a task per message, and a ping task. Here, once python-engineio has
checked the handshake request (version, transport, origin) and the Socket.IO
layer has accepted the Engine.IO session, the connection's socket is taken
over from aiohttp:

- one write carries the 101 answer and the Engine.IO OPEN packet;
- the connection is one object, `WebSocketSession`: the asyncio protocol of
  the socket (frames are parsed in `data_received`, no task per connection)
  and, for python-engineio and python-socketio, the Engine.IO socket of its
  sid (`send`, `close`, `queue`, `closed`, ...);
- the connection's `Writer` is the only outbound path: it writes while TCP
  flow control lets it and queues, with its byte bounds, while it does not;
- one `Heartbeat` timer pings every connection and drops those that do not
  answer;
- the WSGI environ is slimmed once the Socket.IO CONNECT is accepted, which
  also lets aiohttp's request go.

Each inbound Engine.IO message runs python-socketio's handler in a task, as
python-engineio does; the inbound guards (`realtime.engine.inbound`) see
every message. Polling sessions, and their upgrade to websocket, stay on
python-engineio (`realtime.engine.sessions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import socketio
from aiohttp import web
from engineio import packet as eio_packet

from realtime.engine import frames
from realtime.engine.heartbeat import Heartbeat
from realtime.send.writer import DIRECT_BUFFER_LIMIT, Writer, websocket_frame

if TYPE_CHECKING:
    from realtime.engine.sessions import ConformingServer

log = logging.getLogger(__name__)

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


class WebSocketSession(asyncio.Protocol):
    """One lean websocket connection: the socket's protocol and the Engine.IO socket of its sid."""

    __slots__ = ("_awaiting_pong", "_buffer", "_ending", "_fragments", "_paused", "_receive", "_session", "beat",
                 "closed", "closing", "engine", "inbox", "queue", "sid", "transport")
    # As python-engineio's sockets say of a websocket session.
    connected = True
    upgraded = True
    upgrading = False

    def __init__(self, engine: LeanEngine, sid: str, queue: Writer) -> None:
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
    def server(self) -> ConformingServer:
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


class LeanEngine:
    """Accepts websocket sessions for python-engineio's server and owns their shared parts."""

    def __init__(self, eio: ConformingServer, sio: socketio.AsyncServer, *, max_message: int) -> None:
        self.eio = eio
        self.sio = sio
        self.max_message = max_message
        self.heartbeat = Heartbeat(eio.ping_interval + eio.ping_interval_grace_period, eio.ping_timeout)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run `coroutine` in a task held until it ends; its failure is logged."""
        task = asyncio.ensure_future(self._logged(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(coroutine: Awaitable[Any]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lean websocket: handler failed")

    def dispatch(self, session: WebSocketSession, data: str | bytes) -> None:
        """An Engine.IO message to python-socketio (through the inbound guards).

        As python-engineio's reader loop does, a connection's messages are
        handled one after the other (a CONNECT is done before the next
        message starts), by one task that lives while messages keep coming.
        Past `INBOX_LIMIT` waiting messages the socket stops being read.
        """
        if session.inbox is not None:
            session.inbox.append(data)
            if len(session.inbox) >= INBOX_LIMIT and session.transport is not None:
                session.transport.pause_reading()
            return
        session.inbox = []
        self.spawn(self._handle(session, data))

    async def _handle(self, session: WebSocketSession, data: str | bytes) -> None:
        handler: MessageHandler | None = self.eio.handlers.get("message")
        try:
            while handler is not None:
                try:
                    await handler(session.sid, data)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("lean websocket: message handler failed")
                inbox = session.inbox
                if not inbox:
                    break
                data = inbox.pop(0)
                if len(inbox) == INBOX_LIMIT - 1 and session.transport is not None \
                        and not session.transport.is_closing():
                    session.transport.resume_reading()
        finally:
            session.inbox = None

    async def connect(self, environ: dict[str, Any], handshake: Callable[[str], dict[str, Any]]) -> Any:
        """A new websocket session: python-engineio's answer (a dict) on refusal, else the hijacked response."""
        eio = self.eio
        request: web.Request = environ["aiohttp.request"]
        key = request.headers.get("Sec-WebSocket-Key", "")
        if request.headers.get("Sec-WebSocket-Version") != "13" or not frames.valid_key(key):
            return eio._bad_request("Invalid websocket handshake")
        sid = eio.generate_id()
        session = WebSocketSession(self, sid, eio.create_queue())
        eio.sockets[sid] = session
        accepted = await eio._trigger_event("connect", sid, environ, run_async=False)
        if accepted is not None and accepted is not True:
            eio.sockets.pop(sid, None)
            return eio._unauthorized(accepted or None)
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing() or session.closing:
            self.spawn(session.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE))
            return Hijacked()
        # The 101 and the OPEN packet in one write.
        opening = eio_packet.Packet(eio_packet.OPEN, handshake(sid)).encode()
        transport.write(frames.switching_protocols(key) + websocket_frame(opening))
        # aiohttp forgets the connection without closing it; the socket is ours from here.
        tail = protocol._message_tail
        protocol._message_tail = b""
        protocol._force_close = True
        protocol.transport = None
        protocol.keep_alive(False)
        if protocol._manager is not None:
            protocol._manager.connection_lost(protocol, None)
        session.attach(transport, tail)
        return Hijacked()

    def slim_environ(self, eio_sid: str) -> None:
        """After the Socket.IO CONNECT: keep only what a later CONNECT could read; aiohttp's request goes."""
        environ = self.sio.environ.get(eio_sid)
        if environ is not None and "aiohttp.request" in environ and \
                isinstance(self.eio.sockets.get(eio_sid), WebSocketSession):
            self.sio.environ[eio_sid] = {name: environ[name] for name in KEPT_ENVIRON if name in environ}

    def close(self) -> None:
        """Stop the heartbeat (server shutdown, once every session is closed)."""
        self.heartbeat.close()


def install(sio: socketio.AsyncServer, *, max_message: int) -> LeanEngine:
    """Serve new websocket sessions of `sio.eio` (a `ConformingServer`) with the lean engine."""
    engine = LeanEngine(sio.eio, sio, max_message=max_message)
    sio.eio.lean = engine
    dispatch_connect = sio._handle_connect

    async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> None:
        await dispatch_connect(eio_sid, namespace, data)
        engine.slim_environ(eio_sid)

    # python-socketio looks `_handle_connect` up on the instance for every CONNECT packet.
    sio._handle_connect = handle_connect
    return engine
