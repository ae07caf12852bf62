"""realtime/engine/frames.py (client frames, the 101) and realtime/engine/heartbeat.py (one timer for all)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest

from realtime.engine import frames
from realtime.engine.heartbeat import Heartbeat
from tests.support import eventually


def client_frame(payload: bytes, opcode: int = frames.TEXT, fin: bool = True, mask: bytes | None = None) -> bytes:
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 0xFE, size)
    else:
        head = struct.pack("!BBQ", first, 0xFF, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_the_101_answers_the_key_as_rfc_6455_says() -> None:
    # RFC 6455 §1.3's example.
    head = frames.switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" in head
    assert frames.valid_key(base64.b64encode(os.urandom(16)).decode())
    assert not frames.valid_key("short") and not frames.valid_key("!" * 24)
    expected = base64.b64encode(hashlib.sha1(b"k" + frames.GUID).digest())
    assert expected in frames.switching_protocols("k")


def read_all(reader: frames.Reader) -> list[frames.Message]:
    messages = []
    while (message := reader.next()) is not None:
        messages.append(message)
    return messages


def test_frames_of_every_size_split_anywhere() -> None:
    payloads = [b"", b"40", b"x" * 125, b"y" * 126, b"z" * 70_000]
    stream = b"".join(client_frame(p, opcode=frames.BINARY) for p in payloads)
    for cut in (1, 2, 3, 9, 130, len(stream) - 1):
        reader = frames.Reader(100_000)
        reader.feed(stream[:cut])
        received = read_all(reader)
        reader.feed(stream[cut:])
        assert [m.data for m in received + read_all(reader)] == payloads
        assert reader.buffered == 0


@pytest.mark.parametrize(("data", "code"), [
    (b"\x81\x02ab", frames.PROTOCOL_ERROR),  # unmasked
    (client_frame(b"a")[:0] + bytes((0xC1, 0x81)) + b"\x00" * 5, frames.PROTOCOL_ERROR),  # RSV1 without deflate
    (client_frame(b"a", opcode=0x3), frames.PROTOCOL_ERROR),  # reserved opcode
    (client_frame(b"a", opcode=frames.PING, fin=False), frames.PROTOCOL_ERROR),  # fragmented control frame
    (client_frame(b"x" * 200, opcode=frames.PING), frames.PROTOCOL_ERROR),  # long control frame
    (client_frame(b"x" * 2000), frames.TOO_BIG),
])
def test_broken_frames_get_their_close_code(data: bytes, code: int) -> None:
    reader = frames.Reader(1024)
    reader.feed(data)
    with pytest.raises(frames.ProtocolError) as broken:
        reader.next()
    assert broken.value.code == code


class Connection:
    def __init__(self, heartbeat: Heartbeat, answers: int) -> None:
        self.heartbeat = heartbeat
        self.beat = 0
        self.answers = answers
        self.pings = 0
        self.timed_out = False

    def send_ping(self) -> None:
        self.pings += 1
        if self.answers:
            self.answers -= 1
            self.heartbeat.start(self)  # the PONG

    def ping_timed_out(self) -> None:
        self.timed_out = True


async def test_one_timer_pings_every_connection_and_drops_the_silent_ones() -> None:
    heartbeat = Heartbeat(0.02, 0.02)
    lively = [Connection(heartbeat, answers=1000) for _ in range(50)]
    silent = [Connection(heartbeat, answers=2) for _ in range(50)]
    closed = Connection(heartbeat, answers=0)
    for connection in [*lively, *silent, closed]:
        heartbeat.start(connection)
    heartbeat.stop(closed)
    await eventually(lambda: all(c.timed_out for c in silent), timeout=5)
    # Two answered pings, then the third went unanswered: dropped after it, never pinged again.
    assert all(c.pings == 3 for c in silent)
    assert not any(c.timed_out for c in lively) and all(c.pings >= 3 for c in lively)
    assert closed.pings == 0 and not closed.timed_out
    assert heartbeat.timed_out == 50
    heartbeat.close()
