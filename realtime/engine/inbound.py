"""Holes in python-socketio's and python-engineio's inbound dispatch, closed before any handler runs.

- It looks a client event up by its name first, so an event named "connect"
  or "disconnect" runs those handlers with the client's arguments (a client
  could unregister itself and escape its limits and token expiry), and "*"
  runs the catch-all with shifted arguments. Such events, and events whose
  name is not a string, are renamed `INVALID_EVENT`, which the gateway
  answers BAD_REQUEST.
- A binary packet may announce up to 10^10 attachments, and every attachment
  is kept until the count is reached: unbounded memory per connection. Our
  protocol carries no binary packets: the first one (BINARY_EVENT, BINARY_ACK,
  or with JSON a binary Engine.IO message, i.e. an attachment) closes the
  client's transport at once, and nothing of it is kept.
- python-engineio 4.15 answers a polling POST holding a packet type a client
  never sends (OPEN, PING, NOOP) by closing the session and waiting for its
  queue to drain, i.e. for a poll that may never come: the POST hangs for
  good. Each session drops such packets, as the websocket path already does.
- CONNECT packets pass `Admission` (bounded per session, the CONNECT clock,
  evictions that raced a connect), and so do the session's open and close.

They wrap private parts of python-socketio 5.18 (`_handle_event`,
`_handle_eio_message`, `_handle_connect`, `_handle_disconnect`, the Engine.IO
handlers it registers) and python-engineio 4.15 (`AsyncSocket.receive`);
tests/test_hostile.py and tests/test_admission.py cover them so an upstream
change fails loudly.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from realtime.engine.admission import Admission

RESERVED_EVENTS = frozenset({"connect", "disconnect", "*"})
INVALID_EVENT = "\x00invalid"
# The Engine.IO v4 packets a client sends; the server sends the others.
CLIENT_PACKETS = frozenset({eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE})

BINARY_PACKETS = frozenset({sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK})


async def _receive_client_packet(socket: AsyncSocket, pkt: eio_packet.Packet) -> None:
    if pkt.packet_type in CLIENT_PACKETS:
        await AsyncSocket.receive(socket, pkt)


def binary_packet_test(packet_class: Any) -> Callable[[Any], bool]:
    """Whether an Engine.IO message (str or bytes) holds a binary Socket.IO packet, for this serializer."""
    if issubclass(packet_class, sio_packet.Packet) and packet_class.uses_binary_events:
        # JSON (msgpack has no attachments): binary packets are text starting with their type digit;
        # their attachments are bytes.
        return lambda data: isinstance(data, bytes) or data[:1] in ("5", "6")

    def decoded(data: Any) -> bool:
        # msgpack: every packet is bytes, the type is inside.
        try:
            return packet_class(encoded_packet=data).packet_type in BINARY_PACKETS
        except Exception:
            return False  # not a packet at all: dispatch refuses it as before

    return decoded


def guard(sio: socketio.AsyncServer, admission: Admission) -> None:
    """Install the checks on `sio`."""
    dispatch_event = sio._handle_event
    dispatch_message = sio._handle_eio_message
    dispatch_connect = sio._handle_connect
    dispatch_disconnect = sio._handle_disconnect
    eio_connect = sio.eio.handlers["connect"]
    eio_disconnect = sio.eio.handlers["disconnect"]
    binary = binary_packet_test(sio.packet_class)

    async def handle_eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        socket = sio.eio.sockets.get(eio_sid)
        if socket is not None:
            socket.receive = types.MethodType(_receive_client_packet, socket)
        admission.opened(eio_sid)
        return await eio_connect(eio_sid, environ)

    async def handle_eio_disconnect(eio_sid: str, reason: Any) -> None:
        admission.closed(eio_sid)
        await eio_disconnect(eio_sid, reason)

    async def handle_event(eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str) or data[0] in RESERVED_EVENTS:
            data = [INVALID_EVENT]
        await dispatch_event(eio_sid, namespace, id, data)

    async def handle_eio_message(eio_sid: str, data: Any) -> None:
        if binary(data):
            if await admission.close(eio_sid):
                admission.binary += 1  # once per session: frames already in flight land here too
            return
        await dispatch_message(eio_sid, data)

    async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> None:
        if not admission.attempt(eio_sid):
            if await admission.close(eio_sid):
                admission.flooded += 1
            return
        await dispatch_connect(eio_sid, namespace, data)
        await admission.settle(eio_sid, namespace or "/")

    async def handle_disconnect(eio_sid: str, namespace: str | None, reason: Any = None) -> None:
        await dispatch_disconnect(eio_sid, namespace, reason)
        admission.rearm(eio_sid)  # a client DISCONNECT: the session must CONNECT again in time

    sio._handle_event = handle_event
    sio._handle_connect = handle_connect
    sio._handle_disconnect = handle_disconnect
    # Engine.IO holds the bound methods it was given at construction: register ours in their place.
    sio._handle_eio_message = handle_eio_message
    sio.eio.on("message", handle_eio_message)
    sio.eio.on("connect", handle_eio_connect)
    sio.eio.on("disconnect", handle_eio_disconnect)
