"""The lean Engine.IO websocket engine (`REALTIME_ENGINE=lean`).

python-engineio keeps, per websocket connection, aiohttp's request, response,
reader and handler task, a WSGI environ, a writer task, a reader loop that
makes a task per message, and a ping task. Here, once python-engineio has
checked the handshake request (version, transport, origin) and the Socket.IO
layer has accepted the Engine.IO session, the connection's socket is taken
over from aiohttp:

- one write carries the 101 answer and the Engine.IO OPEN packet;
- the connection is one object, `WebSocketSession` (`realtime.engine.websocket`): the asyncio protocol of
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
python-engineio (`realtime.engine.conformance`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web
from engineio import packet as eio_packet

from realtime.engine import frames
from realtime.engine.heartbeat import Heartbeat
from realtime.engine.websocket import INBOX_LIMIT, KEPT_ENVIRON, Hijacked, MessageHandler, WebSocketSession

logger = logging.getLogger(__name__)
# Lost sessions closed per loop iteration: 10 000 transports lost at once (a reconnect storm, a
# partition, ping timeouts together) would otherwise run 10 000 disconnect handlers in one iteration
# and hold the loop for a second, while the clients coming back wait to be accepted.
CLOSE_SLICE = 100


class LeanEngine:
    """Accepts websocket sessions for python-engineio's server and owns their shared parts."""

    def __init__(self, eio: Any, sio: socketio.AsyncServer, *, max_message: int) -> None:
        self.eio = eio  # python-engineio's server, a `ConformingServer` (typed loosely: it imports this module)
        self.sio = sio
        self.max_message = max_message
        self.heartbeat = Heartbeat(eio.ping_interval + eio.ping_interval_grace_period, eio.ping_timeout)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lost: deque[tuple[WebSocketSession, Any]] = deque()
        self._closing = False

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run `coroutine` in a task held until it ends; its failure is logged."""
        task = asyncio.ensure_future(self._logged(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lost(self, session: WebSocketSession, reason: Any) -> None:
        """Close `session` (its transport is gone or it stopped answering) soon, a slice at a time."""
        self._lost.append((session, reason))
        if not self._closing:
            self._closing = True
            self.spawn(self._close_lost())

    async def _close_lost(self) -> None:
        try:
            while self._lost:
                for _ in range(min(CLOSE_SLICE, len(self._lost))):
                    session, reason = self._lost.popleft()
                    self.spawn(session.close(wait=False, abort=True, reason=reason))
                await asyncio.sleep(0)  # this slice's closes run before the next is started
        finally:
            self._closing = False

    @staticmethod
    async def _logged(coroutine: Awaitable[Any]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lean websocket: handler failed")

    def dispatch(self, session: WebSocketSession, data: str | bytes) -> None:
        """An Engine.IO message to python-socketio (through the inbound guards).

        As python-engineio's reader loop does, a connection's messages are
        handled one after the other (a CONNECT is done before the next
        message starts), by one task that lives while messages keep coming.
        Past `INBOX_LIMIT` waiting messages the socket stops being read (`WebSocketSession.readable`).
        """
        if session.inbox is not None:
            session.inbox.append(data)
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
                    logger.exception("lean websocket: message handler failed")
                inbox = session.inbox
                if not inbox:
                    break
                data = inbox.pop(0)
                if len(inbox) == INBOX_LIMIT - 1:
                    session.read()
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
        transport.write(frames.switching_protocols(key) + frames.websocket_frame(opening))
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
