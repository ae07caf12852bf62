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

And one change for speed: `JsonPacket` (the default serializer) encodes with
orjson, ~8× faster than the stdlib with python-socketio's `separators` (a
connect's reply and its subscribe ack: ~8 µs of stdlib JSON), and answers
"is any of it binary?" by whether orjson can encode it (it refuses bytes
anywhere; only then is the data walked, as python-socketio walks it: ~1 µs
instead of ~11 µs for an ack with three prices). Decoding is python-engineio's
(its bound on integer sizes included), with one decoder built once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import engineio
import msgpack  # type: ignore[import-untyped]
import orjson
from engineio import json as eio_json
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

MAX_INT_DIGITS = 100


def _bounded_int(digits: str) -> int:
    # python-engineio's rule (`engineio.json`): a client cannot make the parser build a huge integer.
    if len(digits) > MAX_INT_DIGITS:
        raise ValueError("Integer is too large")
    return int(digits)


# python-engineio's `loads` builds a new decoder (and its scanner) for every packet to pass `parse_int`.
DECODER = json.JSONDecoder(parse_int=_bounded_int)


class OrjsonCodec:
    """The `json` a Socket.IO packet class uses: orjson's compact output, the stdlib for what orjson refuses."""

    @staticmethod
    def loads(text: Any, **options: Any) -> Any:
        if options or not isinstance(text, str):
            return eio_json.loads(text, **options)
        return DECODER.decode(text)

    @staticmethod
    def dumps(data: Any, **options: Any) -> str:
        try:
            return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # integers past 64 bits, cycles, types orjson does not know: the stdlib's answer
            return json.dumps(data, separators=(",", ":"))


class JsonPacket(sio_packet.Packet):  # type: ignore[misc]
    """python-socketio's JSON packet, encoded with orjson."""

    json = OrjsonCodec

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        if isinstance(data, (list, dict)):
            try:
                orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
                return False  # orjson refuses bytes and bytearray wherever they are: there are none
            except TypeError:
                pass  # bytes somewhere, or something else orjson refuses: walk it as python-socketio does
        return cls._walk(data)

    @classmethod
    def _walk(cls, data: Any) -> bool:
        if isinstance(data, (bytes, bytearray)):
            return True
        if isinstance(data, list):
            return any(map(cls._walk, data))
        if isinstance(data, dict):
            return any(map(cls._walk, data.values()))
        return False


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
    return MsgpackPacket if serializer == "msgpack" else JsonPacket


def packet_size(packet: Any) -> int:
    """About how many bytes an engine.io packet takes on the wire.

    Not `packet.encode()`: it caches its first result, and a binary packet
    must later be encoded as base64 for a polling client.
    """
    data = packet.data
    return len(data) + 1 if isinstance(data, (str, bytes)) else 64
