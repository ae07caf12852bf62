"""How Socket.IO packets are encoded, with two fixes so socket.io-client accepts every one.

Pinned to python-socketio 5.18 / python-engineio 4.15 and covered end to end
by tests/test_msgpack.py (real node clients with socket.io-msgpack-parser):

- python-socketio's msgpack packets always carry `data`, `nil` when there is
  none. socket.io-msgpack-parser 3.0.2 rejects a DISCONNECT that has `data`,
  so a server-side disconnect reached the client as a parse error and it
  reconnected instead of stopping. `MsgpackPacket` leaves absent fields out,
  as the JavaScript encoder does.
- python-engineio caches the first encoding of a packet, and a packet emitted
  to a room is one object shared by every recipient. A binary packet (every
  msgpack packet, and JSON binary attachments) encodes as raw bytes for a
  websocket but as base64 text for polling, so whichever recipient came
  second got the other's encoding: polling raised `TypeError` while joining
  the payload. `EngineServer` gives each recipient of a binary packet its own
  copy (the bytes themselves are shared, not re-encoded).
"""

from __future__ import annotations

from typing import Any, Literal

import engineio
import msgpack  # type: ignore[import-untyped]
import socketio
from engineio import packet as eio_packet
from socketio.msgpack_packet import MsgPackPacket


class MsgpackPacket(MsgPackPacket):  # type: ignore[misc]
    """A msgpack Socket.IO packet exactly as socket.io-msgpack-parser writes it."""

    def encode(self) -> bytes:
        packet: dict[str, Any] = {"type": self.packet_type, "nsp": self.namespace or "/"}
        # socket.io-msgpack-parser checks `data === undefined`, not null, for DISCONNECT.
        if self.data is not None:
            packet["data"] = self.data
        if self.id is not None:
            packet["id"] = self.id
        encoded: bytes = msgpack.dumps(packet, default=self.__class__.dumps_default)
        return encoded


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server; a binary packet is encoded once per recipient transport."""

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        if pkt.binary:
            # The copy's encode cache belongs to this recipient alone.
            pkt = eio_packet.Packet(pkt.packet_type, pkt.data)
        await super().send_packet(sid, pkt)


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on `EngineServer`."""

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer


def packet_class(serializer: Literal["json", "msgpack"]) -> Any:
    """The `serializer` argument of `socketio.AsyncServer` for a `REALTIME_SERIALIZER` value."""
    return MsgpackPacket if serializer == "msgpack" else "default"
