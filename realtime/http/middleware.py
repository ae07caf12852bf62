"""In front of Engine.IO: the handshake gate (per-address rate, pod session cap) and the drain middleware.

Both act on a new Engine.IO session before python-engineio builds any state
for it, and answer with the gateway's one HTTP error shape.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from realtime.clients.limits import AddressLimiter
from realtime.engine.admission import Gate
from realtime.engine.server import ENGINEIO_PATH, SocketServer
from realtime.http.errors import error_response
from realtime.protocol import ErrorCode, GatewayError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handshake_limit(limiter: AddressLimiter, address_of: Callable[[web.Request], str], *,
                    sessions: Callable[[], int], max_sessions: int) -> Gate:
    """The gate of every new Engine.IO session: 429 past the address's rate, 503 when the pod is full.

    python-engineio calls it where it opens a session (`SocketServer.gate_sessions`),
    so whatever the query string says, every new session is counted.
    Refusing at the handshake costs no session state, and socket.io-client
    treats either answer as a transport error: it backs off and retries by
    itself (nginx passes a 503 on to the next pod).
    """

    def gate(request: web.Request) -> web.StreamResponse | None:
        wait = limiter.allow(address_of(request))
        if wait is not None:
            error = GatewayError(ErrorCode.TOO_MANY_CONNECTIONS,
                                 "too many new connections from your address; retry later")
            return error_response(error, {"Retry-After": str(max(1, math.ceil(wait)))})
        if sessions() >= max_sessions:
            return error_response(GatewayError(ErrorCode.UNAVAILABLE, "this instance is full; retry later"),
                                  {"Retry-After": "1"})
        return None

    return gate


def turn_away_while_draining(sio: SocketServer, draining: Callable[[], bool]) -> Middleware:
    """While draining, a request for a session this pod does not hold gets 503 before its body is read.

    That is a new handshake, or a session nginx hashed here: nginx retries it
    on the next pod.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if draining() and request.path.startswith(ENGINEIO_PATH):
            if not sio.holds_session(request):
                return error_response(GatewayError(ErrorCode.UNAVAILABLE, "this instance is shutting down"))
            answer = sio.answer_closed_session(request)
            if answer is not None:
                return answer
        return await handler(request)

    return middleware
