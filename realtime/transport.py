"""Our adjustments to python-engineio's aiohttp driver.

python-engineio picks its driver functions from a dict (`server._async`); we
give the server its own copy with these changes, pinned to python-engineio 4.15
and covered by tests/test_upstream_hooks.py so an upstream change fails loudly:

- websocket permessage-deflate is a setting, off by default (the stock driver
  always accepts it: ~60 % more CPU per message, ~100 KB more per connection);
- `REMOTE_ADDR` is the real peer, or the client named in `X-Forwarded-For`
  when the peer is a trusted proxy (the stock driver always says 127.0.0.1);
- every socket's queue is a `writer.Writer` (byte-bounded, direct writes),
  and an accepted websocket hands its transport to that writer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import engineio
from aiohttp import web
from engineio.async_drivers import aiohttp as aiohttp_driver

from .writer import Writer, Writers


class _Networks:
    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def client_address(request: web.Request, trusted: _Networks) -> str:
    """The peer, or the right-most untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.remote or ""
    if peer not in trusted:
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


def address_of(trusted_proxies: Iterable[str]) -> Callable[[web.Request], str]:
    """`client_address` bound to the trusted proxies, for code outside Engine.IO (the handshake limit)."""
    trusted = _Networks(trusted_proxies)
    return lambda request: client_address(request, trusted)


def install(eio: engineio.AsyncServer, *, compression: bool, trusted_proxies: Iterable[str],
            writers: Writers) -> None:
    """Give `eio` a private copy of the aiohttp driver with our changes, and `writers` as its queues."""
    trusted = _Networks(trusted_proxies)
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
            writer = self.handler.__self__.queue
            if isinstance(writer, Writer) and request.transport is not None:
                writer.attach(self.handler.__self__, request.transport)
            self.environ = environ
            await self.handler(self)
            return self._sock

    eio._async = {**eio._async, "translate_request": translate_request, "websocket": WebSocket}
    # engine.io's AsyncSocket makes its queue with `server.create_queue()`.
    eio.create_queue = writers
