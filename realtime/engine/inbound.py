"""Three holes in python-socketio's and python-engineio's inbound dispatch, closed before any handler runs.

- It looks a client event up by its name first, so an event named "connect"
  or "disconnect" runs those handlers with the client's arguments (a client
  could unregister itself and escape its limits and token expiry), and "*"
  runs the catch-all with shifted arguments. Such events, and events whose
  name is not a string, are renamed `INVALID_EVENT`, which the gateway
  answers BAD_REQUEST.
- A binary packet may announce up to 10^10 attachments, and every attachment
  is kept until the count is reached: unbounded memory per connection. Our
  protocol carries no binary data; a packet announcing more than
  `REALTIME_MAX_ATTACHMENTS` is dropped and its connection reported to `on_abuse`.
- python-engineio 4.15 answers a polling POST holding a packet type a client
  never sends (OPEN, PING, NOOP) by closing the session and waiting for its
  queue to drain, i.e. for a poll that may never come: the POST hangs for
  good. Each session drops such packets, as the websocket path already does.

They wrap private parts of python-socketio 5.18 (`_handle_event`,
`_handle_eio_message`, `_binary_packet`) and python-engineio 4.15
(`AsyncSocket.receive`); tests/test_hostile.py covers them so an upstream
change fails loudly.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from realtime.protocol import ErrorCode, GatewayError

RESERVED_EVENTS = frozenset({"connect", "disconnect", "*"})
INVALID_EVENT = "\x00invalid"
# The Engine.IO v4 packets a client sends; the server sends the others.
CLIENT_PACKETS = frozenset({eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE})

AbuseHandler = Callable[[str, GatewayError], None]


async def _receive_client_packet(socket: AsyncSocket, pkt: eio_packet.Packet) -> None:
    if pkt.packet_type in CLIENT_PACKETS:
        await AsyncSocket.receive(socket, pkt)


def guard(sio: socketio.AsyncServer, on_abuse: AbuseHandler, *, max_attachments: int) -> None:
    """Install both checks on `sio`; `on_abuse(sid, error)` is told of connections to end."""
    dispatch_event = sio._handle_event
    dispatch_message = sio._handle_eio_message
    dispatch_connect = sio.eio.handlers["connect"]

    async def handle_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        socket = sio.eio.sockets.get(eio_sid)
        if socket is not None:
            socket.receive = types.MethodType(_receive_client_packet, socket)
        return await dispatch_connect(eio_sid, environ)

    async def handle_event(eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str) or data[0] in RESERVED_EVENTS:
            data = [INVALID_EVENT]
        await dispatch_event(eio_sid, namespace, id, data)

    async def handle_eio_message(eio_sid: str, data: Any) -> None:
        await dispatch_message(eio_sid, data)
        pending = sio._binary_packet.get(eio_sid)
        if pending is not None and pending.attachment_count > max_attachments:
            del sio._binary_packet[eio_sid]
            sid = sio.manager.sid_from_eio_sid(eio_sid, pending.namespace or "/")
            if sid is not None:
                on_abuse(sid, GatewayError(ErrorCode.BAD_REQUEST,
                                           f"a packet may carry at most {max_attachments} binary attachments"))

    sio._handle_event = handle_event
    # Engine.IO holds the bound method it was given at construction: register ours in its place.
    sio._handle_eio_message = handle_eio_message
    sio.eio.on("message", handle_eio_message)
    sio.eio.on("connect", handle_eio_connect)
