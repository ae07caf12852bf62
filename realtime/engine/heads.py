"""Request heads: a deadline on reading each HTTP request head, and a count of the connections still sending one.

aiohttp reads a request head for as long as the client keeps the socket open:
its only timer is the keep-alive one (an hour by default), which dripped
bytes never reset. So one slowloris client could hold thousands of sockets,
counted by no limit. Here (aiohttp's `RequestHandler`, made by our `Server`):

- a connection has `REALTIME_HEADER_TIMEOUT` seconds to send its first
  request head from the moment it opens, and each later head from its first
  byte (an idle keep-alive connection between requests is aiohttp's
  business: nginx keeps a pool of them, and aiohttp closes one idle for
  `REALTIME_KEEPALIVE_TIMEOUT`). Past the deadline it is answered 408 and
  closed;
- the connections still sending a head count toward the pod's connection
  cap together with the Engine.IO sessions (`REALTIME_MAX_CONNECTIONS`): the
  handshake gate counts them, and past the cap a new connection is answered
  503 and closed before anything of it is read. `RESERVE` heads are always
  let in, so a pod full of sessions still answers its probes (`/health`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler


def _answer(status: str, code: str, message: str, *headers: str) -> bytes:
    """A whole HTTP answer in the gateway's error shape, written by the connection itself: there is no request yet."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = [f"HTTP/1.1 {status}", "Connection: close", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


TIMED_OUT = _answer("408 Request Timeout", "REQUEST_TIMEOUT", "the request head took too long")
FULL = _answer("503 Service Unavailable", "UNAVAILABLE", "this instance is full; retry later", "Retry-After: 1")


# Connections that may send a head even when the pod's sessions fill its cap: probes, /metrics scrapes.
RESERVE = 64
# Seconds a refused connection stays open after its answer (see `HeadReader.connection_made`).
LINGER = 1.0


class Heads:
    """The pod's connections that are sending a request head, their deadline, and what was cut."""

    def __init__(self, timeout: float, *, room: Callable[[], int]) -> None:
        self.timeout = timeout
        self.room = room  # connections the pod may still hold beside its sessions
        self.pending = 0  # connections sending a head now
        self.timed_out = 0  # for /metrics
        self.refused = 0

    def full(self) -> bool:
        """No room for one more connection sending a head."""
        return self.pending >= max(self.room(), RESERVE)


class HeadReader(RequestHandler):
    """aiohttp's request handler with a deadline on each request head (see the module)."""

    __slots__ = ("_head_timer", "_heads", "_refused")

    def __init__(self, manager: web.Server, heads: Heads, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._heads = heads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        heads = self._heads
        if heads.full():
            # Full: nothing of this connection is read or kept.
            heads.refused += 1
            self._refused = True
            socket = cast(asyncio.Transport, transport)
            socket.write(FULL)
            if socket.can_write_eof():
                socket.write_eof()
            # Closed a moment later: closing with the client's request unread would reset the connection,
            # and the reset would lose the answer.
            self._loop.call_later(LINGER, socket.close)
            return
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # Bytes while the handler waits for a request (a keep-alive connection between requests) start a head.
        idle = self._head_timer is None and self._waiter is not None and not self._waiter.done()
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a whole head was parsed (or refused with 400): in time
            self._disarm()
        elif idle and data and not self._force_close:
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return  # never registered with aiohttp's server
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._heads.pending += 1
        self._head_timer = self._loop.call_later(self._heads.timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
            self._heads.pending -= 1

    def _expire(self) -> None:
        self._head_timer = None
        self._heads.pending -= 1
        if self.transport is None or self.transport.is_closing():
            return
        self._heads.timed_out += 1
        self.transport.write(TIMED_OUT)
        self.force_close()


class Server(web.Server):
    """aiohttp's low-level server, making `HeadReader`s."""

    def __init__(self, server: web.Server, heads: Heads) -> None:
        super().__init__(server.request_handler, request_factory=server.request_factory,
                         handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)
        self.heads = heads

    def __call__(self) -> RequestHandler:
        return HeadReader(self, self.heads, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner whose connections read their request heads against `heads`' deadline."""

    def __init__(self, app: web.Application, heads: Heads, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.heads = heads

    async def _make_server(self) -> web.Server:
        return Server(await super()._make_server(), self.heads)
