"""A websocket client on a raw socket that sends any frame, well-formed or not, and reads the server's frames.

For the RFC 6455 conformance suite and the attack tests: it builds frames
byte by byte (reserved bits, reserved opcodes, every length form, unmasked),
writes them in any chops, and sees what the server answers, close frames
included. Engine.IO pings are answered while it reads. With `msgpack` it
speaks Socket.IO's msgpack serializer, whose packets are binary messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from typing import Any, NamedTuple

import msgpack as msgpack_

from tests.support.wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, frame, upgrade

# The frame encoder and opcodes are wire's (the one encoder of the raw clients); a probe's tests take them from here.
__all__ = ["BINARY", "CLOSE", "CONTINUATION", "PING", "PONG", "TEXT", "Probe", "Received", "close_payload", "frame"]


class Received(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Probe:
    """One raw websocket connection to the gateway, upgraded (and, if asked, past the Socket.IO CONNECT)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msgpack: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.msgpack = msgpack
        self.opcode = BINARY if msgpack else TEXT  # of a Socket.IO packet
        self.acks = 0

    @classmethod
    async def open(cls, url: str, auth: Any = None, *, receive_buffer: int | None = None,
                   msgpack: bool = False) -> Probe:
        """Upgrade to a websocket and read the Engine.IO OPEN; send the Socket.IO CONNECT if `auth` is given."""
        reader, writer, _ = await upgrade(url, receive_buffer=receive_buffer, limit=receive_buffer or 2**20)
        probe = cls(reader, writer, msgpack)
        opened = await probe.read()
        assert opened.opcode == TEXT and opened.payload.startswith(b"0"), opened
        if auth is not None:
            if msgpack:
                probe.send(BINARY, msgpack_.packb({"type": 0, "nsp": "/", "data": auth}))
                connect = await probe.read()
                assert msgpack_.unpackb(connect.payload)["type"] == 0, connect
            else:
                probe.send(TEXT, ("40" + json.dumps(auth)).encode())
                connect = await probe.read()
                assert connect.payload.startswith(b"40{"), connect
        return probe

    # Sending.

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, opcode: int, payload: bytes = b"", **form: Any) -> None:
        self.writer.write(frame(opcode, payload, **form))

    async def chopped(self, data: bytes, size: int) -> None:
        """Write `data` in chops of `size` bytes, each sent on its own (Autobahn's "octet-wise chops")."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(data), size):
            self.writer.write(data[start:start + size])
            await self.writer.drain()

    def event(self, name: str, *args: Any) -> tuple[int, bytes]:
        """A Socket.IO event asking for an ack, as the payload of a message of `self.opcode`; and its ack id."""
        self.acks += 1
        if self.msgpack:
            return self.acks, msgpack_.packb({"type": 2, "nsp": "/", "data": [name, *args], "id": self.acks})
        return self.acks, f"42{self.acks}{json.dumps([name, *args], ensure_ascii=False)}".encode()

    # Receiving.

    async def read(self, timeout: float = 5.0) -> Received:
        """The server's next frame (Engine.IO pings are answered and skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                first, second = await self.reader.readexactly(2)
                size = second & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
                assert not second & 0x80, "server frames are never masked"
                received = Received(bool(first & 0x80), first & 0x0F, await self.reader.readexactly(size))
                if received.opcode == TEXT and received.payload == b"2":
                    self.send(TEXT, b"3")
                    continue
                return received

    async def ack(self, ack_id: int, timeout: float = 5.0) -> Any:
        """Read until the ack `ack_id`; its first argument."""
        while True:
            received = await self.read(timeout)
            assert received.opcode == self.opcode, received
            if self.msgpack:
                packet = msgpack_.unpackb(received.payload)
                if packet["type"] == 3 and packet["id"] == ack_id:
                    return packet["data"][0]
                continue
            prefix = f"43{ack_id}".encode()
            if received.payload.startswith(prefix):
                return json.loads(received.payload[len(prefix):])[0]

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Read until the server's close frame, then until it ends the connection: the close code it sent.

        None if the connection ended without a close frame; TimeoutError if it never ends.
        """
        code: int | None = None
        async with asyncio.timeout(timeout):
            try:
                while True:
                    received = await self.read(timeout)
                    if received.opcode == CLOSE:
                        code = struct.unpack("!H", received.payload[:2])[0] if received.payload else 1005
                        # The server may wait for our close frame before it closes the socket.
                        with contextlib.suppress(ConnectionError):
                            self.send(CLOSE, received.payload[:2])
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                return code
            with contextlib.suppress(ConnectionError):
                while await self.reader.read(65536):
                    pass
        return code

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
