"""Admission: which Engine.IO sessions this pod holds, and what one may do before and around its Socket.IO CONNECT.

- Every new Engine.IO session passes a gate (the per-address rate, the pod's
  session cap) inside python-engineio's own handshake (`_handle_connect`),
  where it decides that a request opens a session: a query string such as
  `sid=` (empty, value-less, repeated) cannot make a new session look like an
  old one.
- A session without a successful CONNECT within `REALTIME_CONNECT_TIMEOUT` is
  closed (its request environ goes with it); so is one whose namespace
  connection ended (DISCONNECT, an eviction) and that does not CONNECT again
  within the timeout. One sweep task serves every session: deadlines are in
  open order, so it sleeps until the oldest.
- CONNECT packets per session are bounded (`REALTIME_CONNECT_ATTEMPTS`); past
  the bound the session is closed, so one websocket cannot make the pod verify
  signatures without end.
- State that must outlive a namespace DISCONNECT + CONNECT (the event limiter)
  belongs to the Engine.IO session (`scoped`).
- A disconnect asked for a sid still inside its connect handler (an eviction
  by the per-user cap racing a connect) is a no-op in python-socketio; it is
  remembered here and carried out as soon as that connect completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from engineio.async_socket import AsyncSocket

from realtime.engine.packets import EngineServer
from realtime.waits import cancel

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Decides on a new session's handshake request: None admits it, a response refuses it.
Gate = Callable[[web.Request], web.StreamResponse | None]


@dataclass(slots=True)
class EngineSession:
    """What admission keeps per Engine.IO session."""

    attempts: int = 0  # CONNECT packets received
    doomed: bool = False  # evicted while its connect was in progress
    scoped: Any = None  # the state shared by every namespace connection of this session


async def close_transport(eio: Any, socket: AsyncSocket) -> bool:
    """Close one Engine.IO session's transport now; socket.io-client sees a transport close.

    `close()` runs the disconnect handlers and queues CLOSE (which ends a
    pending long-poll); the end-of-queue marker then makes the websocket
    writer close the websocket itself, which socket.io-client would
    otherwise not notice before its ping timeout.
    """
    if socket.closed or socket.closing:
        return False
    await socket.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
    socket.queue.put_nowait(None)
    return True


class Admission:
    """The per-session bookkeeping above, for one `socketio.AsyncServer`."""

    def __init__(self, sio: Any, *, connect_timeout: float, connect_attempts: int) -> None:
        self.sio = sio
        self.connect_timeout = connect_timeout
        self.connect_attempts = connect_attempts
        self.gate: Gate | None = None
        self.sessions: dict[str, EngineSession] = {}
        # Sessions still waiting for a successful CONNECT -> deadline (loop time); insertion order is deadline order.
        self.pending: dict[str, float] = {}
        self.timed_out = 0  # for /metrics
        self.flooded = 0
        self.binary = 0
        self._waiting = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    # The handshake.

    def refuse(self, environ: dict[str, Any]) -> web.StreamResponse | None:
        """The gate's answer to a request that would open a new session."""
        request = environ.get("aiohttp.request")
        if self.gate is None or request is None:
            return None
        return self.gate(request)

    # A session's life.

    def opened(self, eio_sid: str) -> None:
        self.sessions[eio_sid] = EngineSession()
        self.pending[eio_sid] = asyncio.get_running_loop().time() + self.connect_timeout
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="connect-timeout-sweep")
        self._waiting.set()

    def closed(self, eio_sid: str) -> None:
        self.sessions.pop(eio_sid, None)
        self.pending.pop(eio_sid, None)

    def attempt(self, eio_sid: str) -> bool:
        """Count a CONNECT packet; False once the session has used up its attempts."""
        session = self.sessions.get(eio_sid)
        if session is None:
            return True  # not tracked (opened before admission existed): nothing to bound
        session.attempts += 1
        return session.attempts <= self.connect_attempts

    async def settle(self, eio_sid: str, namespace: str) -> None:
        """After a CONNECT was handled: stop the clock if it succeeded; carry out an eviction that came meanwhile."""
        session = self.sessions.get(eio_sid)
        if session is None:
            return
        manager = self.sio.manager
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        connected = sid is not None and manager.is_connected(sid, namespace)
        if connected:
            self.pending.pop(eio_sid, None)
        if session.doomed:
            session.doomed = False
            if connected:
                await self.sio.disconnect(sid, namespace, ignore_queue=True)

    def rearm(self, eio_sid: str | None) -> None:
        """Start the CONNECT clock again: the session's namespace connection has ended but its transport has not."""
        if eio_sid is not None and eio_sid in self.sessions and eio_sid not in self.pending:
            self.pending[eio_sid] = asyncio.get_running_loop().time() + self.connect_timeout
            self._waiting.set()

    def doom(self, eio_sid: str | None) -> None:
        """Disconnect this session's namespace connection once its connect handler is done."""
        session = self.sessions.get(eio_sid or "")
        if session is not None:
            session.doomed = True

    def scoped(self, eio_sid: str | None, make: Callable[[], T]) -> T:
        """The object kept for the session `eio_sid` (made by `make` on first use)."""
        session = self.sessions.get(eio_sid or "")
        if session is None:
            return make()
        if session.scoped is None:
            session.scoped = make()
        value: T = session.scoped
        return value

    async def close(self, eio_sid: str) -> bool:
        """Close a session's transport at once; False if it was closed or closing already."""
        socket = self.sio.eio.sockets.get(eio_sid)
        return socket is not None and await close_transport(self.sio.eio, socket)

    # The one timer for every session's CONNECT deadline.

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self._waiting.clear()
                await self._waiting.wait()
                continue
            eio_sid, deadline = next(iter(self.pending.items()))
            delay = deadline - loop.time()
            if delay > 0:
                # Deadlines only grow in open order: the oldest session is the next one due.
                await asyncio.sleep(delay)
                continue
            del self.pending[eio_sid]
            try:
                if await self.close(eio_sid):
                    self.timed_out += 1
            except Exception:
                logger.exception("closing a session past its connect timeout failed")

    async def stop(self) -> None:
        await cancel(self._sweeper)
        self._sweeper = None


class GatedEngineServer(EngineServer):
    """python-engineio's server with `Admission.refuse` in front of every new session."""

    admission: Admission | None = None

    async def _handle_connect(self, environ: dict[str, Any], transport: str, jsonp_index: int | None = None) -> Any:
        if self.admission is not None:
            refusal = self.admission.refuse(environ)
            if refusal is not None:
                return refusal  # returned as it is to aiohttp: python-engineio built no state
        return await super()._handle_connect(environ, transport, jsonp_index)
