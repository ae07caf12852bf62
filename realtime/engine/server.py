"""`SocketServer`: python-socketio's server, and the one door to its internals.

The rest of the gateway never reads `eio.sockets`, `manager.rooms` or a
socket's queue: it asks this class. When python-socketio or python-engineio
change, this package (`realtime.engine`) is what breaks, and
tests/test_upstream_hooks.py says where.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import socketio
from aiohttp import web

from realtime.config import Settings
from realtime.engine import driver, inbound, lean
from realtime.engine.admission import Admission, Gate, GatedEngineServer, close_transport
from realtime.engine.conformance import ConformingServer
from realtime.engine.manager import MemoryManager, RedisManager
from realtime.engine.packets import packet_class
from realtime.engine.writer import Writer, Writers
from realtime.metrics import RedisLink
from realtime.protocol import AUTH_PID
from realtime.waits import cancel

NAMESPACE = "/"
# Where python-socketio serves Engine.IO (its default `socketio_path`).
ENGINEIO_PATH = "/socket.io/"
ENGINEIO_CLOSE = "1"
T = TypeVar("T")

class GatewayEngineServer(GatedEngineServer, ConformingServer):
    """python-engineio's server as the gateway runs it: every new session admitted first (`admission`),
    then the protocol suite's handshake, heartbeat, close and upgrade, and the lean websocket engine
    (`conformance`, `lean`)."""


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer on our Engine.IO server, driver, writers and manager."""

    def __init__(self, settings: Settings, writers: Writers, manager: MemoryManager | RedisManager) -> None:
        super().__init__(
            async_mode="aiohttp",
            client_manager=manager,
            serializer=packet_class(settings.serializer),
            cors_allowed_origins=_cors(settings.cors_origins),
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            max_http_buffer_size=settings.max_message_bytes,
            logger=False,
            engineio_logger=False,
        )
        driver.install(self.eio, compression=settings.websocket_compression,
                       trusted_proxies=settings.trusted_proxies, writers=writers)
        self.admission = Admission(self, connect_timeout=settings.connect_timeout,
                                   connect_attempts=settings.connect_attempts)
        self.eio.admission = self.admission
        # Connect replies being prepared, by Engine.IO sid: the pid they carry, what runs once queued.
        self._connect_replies: dict[str, tuple[str | None, Callable[[], None]]] = {}

        # The lean engine never offers permessage-deflate: with compression on, websockets stay stock.
        self.lean = (lean.install(self, max_message=settings.max_message_bytes)
                     if settings.engine == "lean" and not settings.websocket_compression else None)

    def _engineio_server_class(self) -> type[GatewayEngineServer]:
        return GatewayEngineServer

    def guard_inbound(self) -> None:
        """Close python-socketio's inbound holes (see `realtime.engine.inbound`)."""
        inbound.guard(self, self.admission)

    # Engine.IO sessions (see `realtime.engine.admission`).

    def gate_sessions(self, gate: Gate) -> None:
        """Pass every new Engine.IO session's handshake through `gate` first."""
        self.admission.gate = gate

    def session_count(self) -> int:
        """Engine.IO sessions open on this pod, with or without a Socket.IO connection."""
        # Not eio.sockets: it keeps a closed polling session until its next request or python-engineio's sweep.
        return len(self.admission.sessions)

    def engine_scoped(self, sid: str, make: Callable[[], T]) -> T:
        """The object kept for the Engine.IO session under `sid`, made by `make` on first use.

        Every namespace connection of that session (after a DISCONNECT and a
        new CONNECT too) gets the same one.
        """
        return self.admission.scoped(self.manager.eio_sid_from_sid(sid, NAMESPACE), make)

    async def close_transport(self, sid: str) -> None:
        """Close the Engine.IO transport under Socket.IO session `sid`: socket.io-client reconnects by itself."""
        eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is not None:
            await self.admission.close(eio_sid)

    async def disconnect(self, sid: str, namespace: str | None = None, ignore_queue: bool = False) -> None:
        """python-socketio's disconnect, which also reaches a sid still inside its connect handler."""
        namespace = namespace or NAMESPACE
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
        if self.manager.is_pre_connected(sid, namespace):
            # python-socketio would ignore it: carry it out once the connect completes.
            self.admission.doom(eio_sid)
        await super().disconnect(sid, namespace, ignore_queue)
        self.admission.rearm(eio_sid)

    async def stop_admission(self) -> None:
        await self.admission.stop()

    # The manager.

    def start_manager(self) -> None:
        """Start the manager now rather than at the first connection, so /ready reflects Redis at once."""
        if not self.manager_initialized:  # type: ignore[has-type]
            self.manager_initialized = True
            self.manager.initialize()

    async def stop_manager(self) -> None:
        task = getattr(self.manager, "thread", None)
        if isinstance(task, asyncio.Task):
            await cancel(task)
        await self.manager.close()

    @property
    def manager_ready(self) -> bool:
        """Whether emits reach the other pods (always, in embedded mode)."""
        return bool(self.manager.listening)

    def manager_links(self) -> list[RedisLink]:
        links: list[RedisLink] = self.manager.links()
        return links

    def manager_dropped(self) -> int | None:
        """Emits that reached only this pod's clients because Redis was down; None in embedded mode."""
        dropped: int | None = self.manager.dropped()
        return dropped

    def manager_messages(self) -> tuple[int, int] | None:
        """Manager messages (in, out) through Redis; None in embedded mode."""
        messages: tuple[int, int] | None = self.manager.messages()
        return messages

    def watch_rooms(self, occupied: Callable[[str], None], vacated: Callable[[str], None]) -> None:
        """Be told when a room gets its first member on this pod and when its last one leaves."""
        self.manager.watch_rooms(occupied, vacated)

    # Rooms and sockets, as the send path and the metrics need them.

    def room_size(self, room: str) -> int:
        return len(self.manager.rooms.get(NAMESPACE, {}).get(room, ()))

    def room_sizes(self, rooms: Iterable[str]) -> dict[str, int]:
        members = self.manager.rooms.get(NAMESPACE, {})
        return {room: len(members.get(room, ())) for room in rooms}

    def room_writers(self, room: str) -> list[Writer]:
        """The outbound writer of every open connection in `room` on this pod."""
        # python-socketio's rooms: rooms[namespace][room] maps sid -> engine.io sid.
        members = self.manager.rooms.get(NAMESPACE, {}).get(room)
        if not members:
            return []
        sockets = self.eio.sockets
        return [socket.queue for eio_sid in members.values()
                if (socket := sockets.get(eio_sid)) is not None and not socket.closed]

    def encode_packet(self, args: list[Any]) -> list[str | bytes]:
        """An EVENT packet (`[event, *args]`) as python-socketio would send it: one text part (JSON) or binary parts."""
        encoded = self.packet_class(socketio.packet.EVENT, namespace=NAMESPACE, data=args).encode()
        return encoded if isinstance(encoded, list) else [encoded]

    def writer_of(self, sid: str) -> Writer | None:
        """The outbound writer of Socket.IO session `sid` on this pod, if it is open."""
        eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)
        socket = self.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if socket is None or socket.closed:
            return None
        writer: Writer = socket.queue
        return writer

    def connected(self, sid: str) -> bool:
        """Whether Socket.IO session `sid` is connected to this pod."""
        return bool(self.manager.is_connected(sid, NAMESPACE))

    # The CONNECT reply.

    def prepare_connect_reply(self, sid: str, pid: str | None, then: Callable[[], None]) -> None:
        """From the connect handler: the CONNECT reply of `sid` carries `pid`, and `then()` runs once it is queued.

        python-socketio builds that reply itself after the handler returns;
        `then` is where a connection may be sent its first events (a replay),
        which must follow the reply, as Node's server sends them.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is not None:
            self._connect_replies[eio_sid] = (pid, then)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        staged = None
        if self._connect_replies and pkt.packet_type in (socketio.packet.CONNECT, socketio.packet.CONNECT_ERROR):
            staged = self._connect_replies.pop(eio_sid, None)
        if staged is None or pkt.packet_type != socketio.packet.CONNECT:
            await super()._send_packet(eio_sid, pkt)
            return
        pid, then = staged
        if pid is not None and isinstance(pkt.data, dict):
            pkt.data = {**pkt.data, AUTH_PID: pid}
        await super()._send_packet(eio_sid, pkt)
        then()

    async def emit_local(self, event: str, data: Any, room: str) -> None:
        """python-socketio's own local room emit (one task per recipient), never through Redis."""
        await socketio.AsyncManager.emit(self.manager, event, data, namespace=NAMESPACE, room=room)

    def transports(self) -> list[str]:
        """"websocket" or "polling" for each open Engine.IO connection."""
        # Not eio.transport(sid): it raises for a closing session, and deletes it.
        return ["websocket" if socket.upgraded else "polling"
                for socket in list(self.eio.sockets.values()) if not socket.closed]

    # Ending connections.

    async def end_session(self, sid: str, timeout: float) -> None:
        """Disconnect Socket.IO session `sid` here, then close its transport once what it was sent is flushed.

        The namespace DISCONNECT tells socket.io-client not to reconnect by
        itself; closing the transport after it stops a hostile client from
        reusing the Engine.IO session.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)  # forgotten by the disconnect
        await self.disconnect(sid, ignore_queue=True)
        if eio_sid is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.eio.disconnect(eio_sid), timeout)

    async def close_transports(self, grace: float) -> None:
        """Close every client's Engine.IO transport so socket.io-client reconnects at once.

        python-engineio's own `disconnect()` queues a CLOSE packet, which
        socket.io-client ignores on a websocket: the client would hang until its
        ping timeout (~45 s). A namespace disconnect would stop it from
        reconnecting at all. So: queue CLOSE (ends a polling client's pending
        long-poll at once), then wake the websocket writer with the end-of-queue
        marker, which makes it close the websocket itself.
        """
        eio = self.eio
        closing = []
        for socket in list(eio.sockets.values()):
            if socket.closed:
                # A client that said goodbye over a POST may have left a long-poll
                # pending, which python-engineio would hold for ping interval + timeout.
                socket.queue.put_nowait(None)
            elif not socket.closing:
                closing.append(close_transport(eio, socket))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=max(0.1, grace))
        # Stay until every client has been told: a polling client between two
        # requests learns of the close only from its next GET, which must find us.
        # python-engineio forgets a session once its last request is answered,
        # and has no event for it: poll.
        while eio.sockets and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self.lean is not None:
            self.lean.close()

    def answer_closed_session(self, request: web.Request) -> web.Response | None:
        """While draining: the answer to an Engine.IO request of a session this pod has closed.

        Returns None when the request belongs to no session here (the caller
        turns it away) or to a session still open (it is served as usual).
        A polling GET after its session was closed gets Engine.IO's CLOSE, so
        the client sees a clean close and reconnects; a POST (a pong, an
        event) is dropped, as the session is.
        """
        socket = self.eio.sockets.get(request.query.get("sid", ""))
        if socket is None or not socket.closed or socket.upgraded:
            return None
        if request.method != "GET":
            return web.Response(text="ok", content_type="text/plain")
        self.eio.sockets.pop(socket.sid, None)
        return web.Response(text=ENGINEIO_CLOSE, content_type="text/plain")

    def holds_session(self, request: web.Request) -> bool:
        """Whether `request` names an Engine.IO session of this pod."""
        return request.query.get("sid", "") in self.eio.sockets


def _cors(origins: list[str]) -> str | list[str] | None:
    if not origins:
        return None  # same origin only
    if "*" in origins:
        return "*"
    return origins
