"""How Socket.IO packets are encoded, with two fixes so socket.io-client accepts every one.

Pinned to python-socketio 5.18 / python-engineio 4.15 and covered end to end
by tests/test_msgpack.py (real node clients with socket.io-msgpack-parser):

- python-socketio's msgpack packets always carry `data`, `nil` when there is
  none. socket.io-msgpack-parser 3.0.2 rejects a DISCONNECT that has `data`,
  so a server-side disconnect reached the client as a parse error and it
  reconnected instead of stopping. `MsgpackPacket` leaves absent fields out,
  as the JavaScript encoder does.
- python-engineio caches the first encoding of a packet, and a packet sent to
  many recipients is one shared object (python-socketio's room emit, our
  direct fan-out, the writer measuring a packet's size). A binary packet
  (every msgpack packet, JSON binary attachments) encodes as raw bytes for a
  websocket but as base64 text inside a polling response, so a polling
  response that met the cached bytes raised `TypeError` and the client lost
  its session. `EngineServer` encodes polling responses from private copies
  of binary packets: the shared packet only ever caches the raw encoding.
"""

from __future__ import annotations

from typing import Any, Literal

import engineio
import msgpack  # type: ignore[import-untyped]
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
    """python-engineio's server; polling responses never touch a binary packet's shared cache."""

    def _ok(self, packets: list[eio_packet.Packet] | None = None, headers: list[tuple[str, str]] | None = None,
            jsonp_index: int | None = None) -> dict[str, Any]:
        if packets is not None:
            # A copy's base64 encoding is cached on the copy, which is dropped with the response.
            packets = [eio_packet.Packet(p.packet_type, p.data) if p.binary else p for p in packets]
        response: dict[str, Any] = super()._ok(packets, headers, jsonp_index)
        return response


def packet_class(serializer: Literal["json", "msgpack"]) -> Any:
    """The `serializer` argument of `socketio.AsyncServer` for a `REALTIME_SERIALIZER` value."""
    return MsgpackPacket if serializer == "msgpack" else "default"


def packet_size(packet: Any) -> int:
    """About how many bytes an engine.io packet takes on the wire.

    Not `packet.encode()`: it caches its first result, and a binary packet
    must later be encoded as base64 for a polling client.
    """
    data = packet.data
    return len(data) + 1 if isinstance(data, (str, bytes)) else 64
