"""Our changes to python-engineio's aiohttp driver.

python-engineio picks its driver functions from a dict (`server._async`); we
give the server its own copy with these changes:

- websocket permessage-deflate is a setting, off by default (the stock driver
  always accepts it: ~60 % more CPU per message, ~100 KB more per connection);
- `REMOTE_ADDR` is the real client (`realtime.engine.proxies`), where the stock
  driver always says 127.0.0.1 behind a proxy;
- every HTTP method reaches Engine.IO (`realtime.engine.conformance` answers 400
  to those it does not serve, as the protocol suite expects);
- every socket's queue is a `Writer` (byte-bounded, direct writes), and an
  accepted websocket hands its transport to that writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import engineio
from aiohttp import web
from engineio.async_drivers import aiohttp as aiohttp_driver

from realtime.engine.proxies import Networks, client_address
from realtime.engine.writer import Writer, Writers


def install(eio: engineio.AsyncServer, *, compression: bool, trusted_proxies: Iterable[str],
            writers: Writers) -> None:
    """Give `eio` a private copy of the aiohttp driver with our changes, and `writers` as its queues."""
    trusted = Networks(trusted_proxies)
    base_translate = aiohttp_driver.translate_request

    def translate_request(request: web.Request) -> dict[str, Any]:
        environ: dict[str, Any] = base_translate(request)
        environ["REMOTE_ADDR"] = client_address(request, trusted)
        return environ

    class WebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=compression)
            await self._sock.prepare(request)
            # The driver is given the socket's bound `_websocket_handler`.
            socket = self.handler.__self__
            writer = socket.queue
            if isinstance(writer, Writer) and request.transport is not None:
                # Direct writes keep order only once the websocket is the transport (upgrade done).
                writer.attach(socket.sid, request.transport,
                              lambda: socket.upgraded and not socket.upgrading and not socket.closing)
            self.environ = environ
            await self.handler(self)
            return self._sock

    def create_route(app: web.Application, server: engineio.AsyncServer, path: str) -> None:
        # Every method reaches Engine.IO, which answers 400 to the ones it does not serve (aiohttp says 405).
        app.router.add_route("*", path, server.handle_request)

    eio._async = {**eio._async, "translate_request": translate_request, "websocket": WebSocket,
                  "create_route": create_route}
    # engine.io's AsyncSocket makes its queue with `server.create_queue()`.
    eio.create_queue = writers
