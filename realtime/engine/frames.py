"""RFC 6455 as the gateway needs it: the opening handshake's answer, its frames, the client's messages.

Server-to-client frames are unmasked, with no extensions (`websocket_frame`,
`close_frame`); `Reader` turns the client's bytes into messages and control
frames (client frames are
always masked; no extensions are ever negotiated, so a set RSV bit is a
protocol error).

Its limits hold whatever a client sends, at a cost linear in the bytes it
sends: a frame longer than the message bound is refused from its header; a
fragmented message counts every fragment's framing as well as its payload
against the bound, and may have at most `MAX_FRAGMENTS` fragments, so empty
continuation frames cannot run on; text is checked as UTF-8 fragment by
fragment (Autobahn|Testsuite 6.4.x: fail fast).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import struct
from typing import NamedTuple, cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes (RFC 6455 §7.4.1).
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009
# What a client's close frame may carry (RFC 6455 §7.4; 1012-1014 are IANA's since): 1004-1006 and 1015 are
# never sent, 0-999 and 1016-2999 are not in use, 3000-4999 belong to libraries and applications.
VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                               *range(3000, 5000)})
# Fragments one message may have. Browsers and socket.io-client never fragment; this only stops a flood.
MAX_FRAGMENTS = 1024
_TEXT, _BINARY = 0x80 | TEXT, 0x80 | BINARY  # FIN + opcode


class ProtocolError(Exception):
    """The client broke RFC 6455; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Message(NamedTuple):
    """A whole data message (`TEXT` as str, `BINARY` as bytes) or a control frame (`PING`, `PONG`, `CLOSE`).

    A CLOSE's payload is checked already: empty, or a valid code and a UTF-8 reason.
    """

    opcode: int
    data: str | bytes


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


def websocket_frame(payload: str | bytes) -> bytes:
    """One unmasked RFC 6455 frame (server to client, no extensions)."""
    if isinstance(payload, str):
        data, first = payload.encode(), _TEXT
    else:
        data, first = payload, _BINARY
    size = len(data)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + data


def close_frame(code: int) -> bytes:
    return bytes((0x80 | CLOSE, 2)) + struct.pack("!H", code)


def close_code(payload: bytes) -> int | None:
    """The code of a client's (checked) close frame; None for an empty one."""
    return struct.unpack_from("!H", payload)[0] if payload else None


def control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def unmask(mask: bytes | bytearray, payload: bytes | bytearray) -> bytes:
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class Reader:
    """One connection's incremental RFC 6455 reader: `feed` bytes, then take `next()` until it gives None.

    Raises `ProtocolError` (and only that) for anything RFC 6455 forbids or
    the limits refuse; after that the connection is to be failed, not read.
    Holds nothing while no frame or message is partly received.
    """

    __slots__ = ("_buffer", "_decoder", "_fragments", "_max", "_opcode", "_parts", "_pos", "_size")

    def __init__(self, max_message: int) -> None:
        self._max = max_message
        self._buffer: bytes | bytearray | None = None  # unparsed bytes from `_pos` on
        self._pos = 0
        self._opcode = -1  # the fragmented message being received (TEXT or BINARY), -1 if none
        self._parts: list[str | bytes] | None = None
        self._decoder: codecs.IncrementalDecoder | None = None  # its text so far is checked UTF-8
        self._fragments = 0
        self._size = 0  # its bytes on the wire so far, framing included

    @property
    def idle(self) -> bool:
        """Nothing is partly received: the reader may be dropped and a new one made for the next bytes."""
        return self._buffer is None and self._opcode < 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return 0 if self._buffer is None else len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer is None:
            self._buffer, self._pos = data, 0
            return
        # A bytearray grows in place (amortised linear); what was parsed already is copied away once.
        if self._pos or not isinstance(buffer, bytearray):
            buffer = bytearray(memoryview(buffer)[self._pos:])
            self._pos = 0
        buffer += data
        self._buffer = buffer

    def next(self) -> Message | None:
        """The next message or control frame, or None until more bytes are fed."""
        while True:
            frame = self._frame()
            if frame is None:
                return None
            fin, opcode, payload, wire = frame
            if opcode >= CLOSE:
                if opcode == CLOSE:
                    check_close(payload)
                return Message(opcode, payload)
            if opcode == CONTINUATION:
                if self._opcode < 0:
                    raise ProtocolError(PROTOCOL_ERROR, "a continuation frame without a message")
                self._fragments += 1
                self._size += wire
                if self._fragments > MAX_FRAGMENTS:
                    raise ProtocolError(TOO_BIG, f"a message in more than {MAX_FRAGMENTS} fragments")
                if self._size > self._max:
                    raise ProtocolError(TOO_BIG, f"a fragmented message over {self._max} bytes")
                self._part(payload, fin)
                if not fin:
                    continue
                return self._assembled()
            if self._opcode >= 0:
                raise ProtocolError(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if fin:
                return Message(opcode, _text(payload) if opcode == TEXT else payload)
            self._opcode, self._parts, self._fragments, self._size = opcode, [], 1, wire
            if opcode == TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._part(payload, False)

    def _part(self, payload: bytes, final: bool) -> None:
        assert self._parts is not None
        if self._decoder is None:
            self._parts.append(payload)
            return
        try:
            self._parts.append(self._decoder.decode(payload, final))
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "text is not UTF-8") from None

    def _assembled(self) -> Message:
        opcode, parts = self._opcode, self._parts or []
        self._opcode, self._parts, self._decoder, self._fragments, self._size = -1, None, None, 0, 0
        if opcode == TEXT:
            return Message(opcode, "".join(cast(list[str], parts)))
        return Message(opcode, b"".join(cast(list[bytes], parts)))

    def _frame(self) -> tuple[bool, int, bytes, int] | None:
        """The next whole frame (fin, opcode, unmasked payload, bytes on the wire), or None."""
        data = self._buffer
        if data is None:
            return None
        pos = self._pos
        available = len(data) - pos
        if available < 2:
            return None
        first, second = data[pos], data[pos + 1]
        if first & 0x70:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
        opcode = first & 0x0F
        if opcode >= CLOSE:
            if opcode > PONG:
                raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if not first & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "a fragmented control frame")
        elif opcode > BINARY:
            raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        length = second & 0x7F
        head = 2
        if length == 126:
            if available < 4:
                return None
            (length,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif length == 127:
            if available < 10:
                return None
            (length,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
            if length >> 63:
                raise ProtocolError(PROTOCOL_ERROR, "a 64-bit length with its top bit set")
        if opcode >= CLOSE and length > 125:
            raise ProtocolError(PROTOCOL_ERROR, "a control frame over 125 bytes")
        if length > self._max:
            raise ProtocolError(TOO_BIG, f"a frame of {length} bytes is over {self._max}")
        wire = head + 4 + length
        if available < wire:
            return None
        start = pos + head
        payload = unmask(data[start:start + 4], data[start + 4:pos + wire])
        if available == wire:
            self._buffer = None
            self._pos = 0
        else:
            self._pos = pos + wire
        return bool(first & 0x80), opcode, payload, wire


def check_close(payload: bytes) -> None:
    """A client's close frame: empty, or a code it may send and a UTF-8 reason (RFC 6455 §5.5.1, §7.4)."""
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "a close frame with a 1-byte payload")
    code = close_code(payload)
    if code not in VALID_CLOSE_CODES:
        raise ProtocolError(PROTOCOL_ERROR, f"close code {code} is not one a client may send")
    _text(payload[2:])


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "text is not UTF-8") from None
