"""RFC 6455 as the lean engine needs it: the opening handshake's answer and client frame parsing.

Server-to-client frames are built by `realtime.engine.writer.websocket_frame`
(unmasked, no extensions). Here: the 101 answer, and the incremental parser
of client frames (always masked; no extensions are ever negotiated, so a
set RSV bit is a protocol error).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import NamedTuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes (RFC 6455 §7.4.1).
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009


class ProtocolError(Exception):
    """The client broke RFC 6455; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


def valid_key(key: str) -> bool:
    """Sec-WebSocket-Key is base64 of 16 bytes."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def switching_protocols(key: str) -> bytes:
    """The whole 101 response head for `Sec-WebSocket-Key: key`."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def close_frame(code: int) -> bytes:
    return bytes((0x80 | CLOSE, 2)) + struct.pack("!H", code)


def control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def unmask(mask: bytes, payload: bytes) -> bytes:
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def parse(data: bytes, max_size: int) -> tuple[list[Frame], int]:
    """The complete frames at the start of `data`, and how many bytes they took.

    Raises `ProtocolError` for an unmasked frame, a set RSV bit, an unknown
    opcode, a fragmented or long control frame, or a payload over `max_size`.
    """
    frames: list[Frame] = []
    size = len(data)
    pos = 0
    while size - pos >= 2:
        first, second = data[pos], data[pos + 1]
        if first & 0x70:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
        opcode = first & 0x0F
        length = second & 0x7F
        head = pos + 2
        if length == 126:
            if size - pos < 4:
                break
            (length,) = struct.unpack_from("!H", data, pos + 2)
            head = pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            (length,) = struct.unpack_from("!Q", data, pos + 2)
            head = pos + 10
        if opcode >= CLOSE:
            if opcode > PONG:
                raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if length > 125 or not first & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "control frames are short and unfragmented")
        elif opcode > BINARY:
            raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if length > max_size:
            raise ProtocolError(TOO_BIG, f"a frame of {length} bytes is over {max_size}")
        end = head + 4 + length
        if end > size:
            break
        frames.append(Frame(bool(first & 0x80), opcode, unmask(data[head:head + 4], data[head + 4:end])))
        pos = end
    return frames, pos
