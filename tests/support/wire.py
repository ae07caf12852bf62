"""A raw Engine.IO v4 / Socket.IO v5 websocket client: frames in wire order, reads only when asked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length_form: int | None = None, mask: bytes | None = None) -> bytes:
    """One client frame (RFC 6455 §5.2), well-formed or not: the one encoder of the tests' raw clients.

    `length_form` 126 or 127 forces the 16- or 64-bit length even for a short
    payload; `rsv` sets reserved bits; `mask` fixes the key (default: random).
    """
    size = len(payload)
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    mask_bit = 0x80 if masked else 0
    form = length_form or (size if size < 126 else 126 if size < 65536 else 127)
    if form == 126:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    elif form == 127:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    else:
        head = bytes((first, mask_bit | size))
    if not masked:
        return head + payload
    key = os.urandom(4) if mask is None else mask
    stream = (key * (size // 4 + 1))[:size]
    return head + key + (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(size, "little")


def tcp_send_buffer_max() -> int:
    """The most the kernel may buffer on the sending side of one TCP socket."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


@dataclass
class Packet:
    """One thing a `RawClient` saw on the wire, in order."""

    kind: str  # "event", "ack", "ping", "connect", "other"
    name: str = ""
    args: list[Any] = field(default_factory=list)
    id: int | None = None



async def upgrade(url: str, *, receive_buffer: int | None = None, limit: int = 2**16,
                  headers: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A socket to `url` upgraded to a websocket (Engine.IO v4): its streams and the 101's head.

    `receive_buffer` sets SO_RCVBUF before connecting; `headers` are more request lines, each ending in CRLF.
    """
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, head

class RawClient:
    """An Engine.IO v4 / Socket.IO v5 websocket client on a plain TCP socket.

    It sees the frames exactly in wire order and reads only when asked, so a
    test can make it stop reading (with a small receive buffer) like a stalled
    phone. It answers pings while it reads.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: str) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = handshake  # the server's 101 response head
        self.pings = 0
        self._ack_id = 0
        self.connect_data: Any = None  # the CONNECT reply's data ({"sid", "pid"?})

    @classmethod
    async def connect(cls, url: str, auth: Any, *, receive_buffer: int | None = None) -> RawClient:
        # A small stream limit too, so asyncio stops reading soon after the test does.
        reader, writer, head = await upgrade(url, receive_buffer=receive_buffer, limit=receive_buffer or 2**16,
                                             headers="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        client = cls(reader, writer, head.decode())
        opened = await client._text()
        assert opened.startswith("0"), opened
        client.send_text("40" + json.dumps(auth))
        connect = await client.receive()
        assert connect.kind == "connect", connect
        client.connect_data = connect.args[0]
        return client

    def send_text(self, text: str) -> None:
        self.writer.write(frame(TEXT, text.encode()))

    def emit(self, event: str, data: Any) -> int:
        """Send an event that asks for an ack; return the ack id."""
        self._ack_id += 1
        self.send_text(f"42{self._ack_id}" + json.dumps([event, data]))
        return self._ack_id

    async def call(self, event: str, data: Any) -> Any:
        """Send an event and read until its ack (nothing else may arrive before it)."""
        ack_id = self.emit(event, data)
        packet = await self.receive()
        assert packet.kind == "ack" and packet.id == ack_id, packet
        return packet.args[0]

    async def receive(self) -> Packet:
        """The next Socket.IO packet; pings are answered and counted on the way."""
        while True:
            text = await self._text()
            if text == "2":
                self.pings += 1
                self.send_text("3")
                continue
            if not text.startswith("4"):
                return Packet("other", text)
            kind, body = text[1], text[2:]
            digits = len(body) - len(body.lstrip("0123456789"))
            ack_id = int(body[:digits]) if digits else None
            data: Any = json.loads(body[digits:]) if body[digits:] else None
            if kind == "0":
                return Packet("connect", args=[data])
            if kind == "2":
                return Packet("event", data[0], data[1:], ack_id)
            if kind == "3":
                return Packet("ack", args=data, id=ack_id)
            return Packet("other", text)

    async def _text(self) -> str:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(size)
        assert first == 0x81, f"expected a final text frame, got {first:#x}"
        return payload.decode()

    async def closed_by_server(self, timeout: float) -> bool:
        """Read (and discard) until the server ends the connection; False if it never does."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

