"""Engine.IO sessions as socket.io's own protocol test suite defines them.

socket.io/socket.io-protocol (`test-suite/test-suite.js`, "Engine.IO
protocol") is the peer's definition of the wire. python-engineio 4.15 differs
from it (and from Node's engine.io) in these places, fixed here for both
transports:

- the handshake advertises `int(seconds) * 1000`: 0 for a 0.3 s ping interval,
  2000 for 2.5 s, so a client with a short timeout drops a healthy server. We
  advertise the configured milliseconds;
- a handshake without `transport` is taken as polling, and a method other than
  GET, POST or OPTIONS gets 405 (aiohttp's, before python-engineio): both are 400;
- a polling session whose client does not answer a ping lives on until its
  next long-poll times out. Here no PONG within the ping timeout ends it,
  as in Node, and its next request gets 400;
- a client's CLOSE over a POST left the pending long-poll waiting for the ping
  interval + timeout, and over a websocket left the websocket open: the
  long-poll now gets NOOP ("6") and the websocket is closed at once;
- a second websocket for a session that has already upgraded got a 400 to its
  upgrade request (a websocket client sees an error, not a close). Node
  completes the upgrade and closes that websocket; so do we.

tests/test_engineio_protocol.py reproduces the suite's 16 cases.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from engineio import async_socket, exceptions
from engineio import packet as eio_packet

from realtime.engine.lean import LeanEngine
from realtime.engine.packets import EngineServer

ENGINEIO_METHODS = frozenset({"GET", "POST", "OPTIONS"})


class Session(async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket, with Node's ping timeout and an immediate end on the client's CLOSE."""

    async def _send_ping(self) -> None:
        await asyncio.sleep(self.server.ping_interval)
        if self.closing or self.closed:
            return
        self.last_ping = sent = time.time()
        await self.send(eio_packet.Packet(eio_packet.PING))
        await asyncio.sleep(self.server.ping_timeout)
        # A PONG clears `last_ping` (schedule_ping); a later ping sets a new one.
        if self.last_ping == sent and not self.closing and not self.closed:
            await self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
            self.end_transport()
            if not self.upgraded:
                self.server.sockets.pop(self.sid, None)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        was_open = not self.closed and not self.closing
        await super().close(wait=wait, abort=abort, reason=reason)
        if was_open and reason == self.server.reason.CLIENT_DISCONNECT:
            if not self.upgraded:
                # Ends a pending long-poll now; the session's next request gets 400.
                self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
            self.end_transport()

    def end_transport(self) -> None:
        """The end-of-queue marker: the websocket writer closes the websocket, a long-poll returns."""
        self.queue.put_nowait(None)


class ConformingServer(EngineServer):
    """python-engineio's server with the socket.io protocol suite's handshake, heartbeat, close and upgrade.

    With `lean` set (`realtime.engine.lean.install`), new websocket sessions are the lean engine's.
    """

    lean: LeanEngine | None = None

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if request.method not in ENGINEIO_METHODS:
            return await self._answer(self._bad_request("Method not allowed"), request)
        if "transport" not in query:
            return await self._answer(self._bad_request("Invalid transport"), request)
        sid = query.get("sid")
        if sid is not None and request.method == "GET" and query["transport"] == "websocket":
            socket = self.sockets.get(sid)
            # Only once upgraded: python-engineio leaves `upgrading` set when a probe's websocket fails,
            # and the client must be free to try again.
            if socket is not None and socket.upgraded and _is_upgrade(request):
                # Node accepts the websocket and closes it (the transport had already been upgraded).
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                await ws.close()
                return ws
        response: web.StreamResponse = await super().handle_request(request)
        return response

    async def _answer(self, answer: dict[str, Any], request: web.Request) -> web.StreamResponse:
        environ = self._async["translate_request"](request)
        response: web.StreamResponse = await self._make_response(answer, environ)
        return response

    def handshake(self, sid: str, transport: str) -> dict[str, Any]:
        """The OPEN packet's data, with the heartbeat in exact milliseconds."""
        return {
            "sid": sid,
            "upgrades": self._upgrades(sid, transport),
            "pingTimeout": round(self.ping_timeout * 1000),
            "pingInterval": round((self.ping_interval + self.ping_interval_grace_period) * 1000),
            "maxPayload": self.max_http_buffer_size,
        }

    async def _handle_connect(self, environ: dict[str, Any], transport: str, jsonp_index: int | None = None) -> Any:
        # python-engineio 4.15's `_handle_connect`, with our session class and handshake (no cookie: never set).
        if transport == "websocket" and self.lean is not None:
            # Lean sessions need no service task: python-engineio's walks every socket, every ping timeout.
            return await self.lean.connect(environ, lambda sid: self.handshake(sid, transport))
        if self.start_service_task:  # type: ignore[has-type]
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)
        sid = self.generate_id()
        socket = Session(self, sid)
        self.sockets[sid] = socket
        await socket.send(eio_packet.Packet(eio_packet.OPEN, self.handshake(sid, transport)))
        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            return self._unauthorized(ret or None)
        socket.schedule_ping()
        if transport == "websocket":
            answer = await socket.handle_get_request(environ)
            if socket.closed and sid in self.sockets:
                del self.sockets[sid]
            return answer
        socket.connected = True
        try:
            return self._ok(await socket.poll(), jsonp_index=jsonp_index)
        except exceptions.QueueEmpty:  # the session ended before its first poll
            return self._bad_request()


def _is_upgrade(request: web.Request) -> bool:
    connection = {part.strip().lower() for part in request.headers.get("Connection", "").split(",")}
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "websocket"
