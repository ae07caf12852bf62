"""realtime/engine/frames.py (the 101, the client's frames and messages) and realtime/engine/heartbeat.py."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.engine import frames
from realtime.engine.heartbeat import Heartbeat
from tests.support import eventually
from tests.support.wire import frame


def client_frame(payload: bytes, opcode: int = frames.TEXT, fin: bool = True, mask: bytes | None = None) -> bytes:
    return frame(opcode, payload, fin=fin, mask=mask)


def test_the_tests_frame_encoder_writes_rfc_6455s_examples() -> None:
    # RFC 6455 §5.7: "Hello" unmasked and masked, a 256-byte and a 64 KiB binary message; the raw clients'
    # one encoder (tests/support/wire.py) is what every frame test sends.
    assert frame(frames.TEXT, b"Hello", masked=False) == bytes.fromhex("810548656c6c6f")
    assert frame(frames.TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert frame(frames.BINARY, b"x" * 256, masked=False)[:4] == bytes.fromhex("827e0100")
    assert frame(frames.BINARY, b"x" * 65536, masked=False)[:10] == bytes.fromhex("827f0000000000010000")
    assert frame(frames.PING, b"", fin=False, rsv=4, length_form=127, mask=b"abcd") == (
        bytes((0x49, 0xFF)) + bytes(8) + b"abcd")


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
], ids=["unmasked", "rsv1", "reserved-opcode", "fragmented-control", "long-control", "too-big"])  # masks are random
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


# The reader as a whole: limits, close frames, UTF-8, and properties over any bytes.

def outcome(chunks: list[bytes], max_message: int = 4096) -> tuple[list[frames.Message], int | None]:
    """Everything a reader fed `chunks` gives: its messages, and the close code it failed with (or None)."""
    reader = frames.Reader(max_message)
    messages: list[frames.Message] = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (message := reader.next()) is not None:
                messages.append(message)
    except frames.ProtocolError as error:
        return messages, error.code
    return messages, None


def test_empty_continuations_cannot_dodge_the_bounds() -> None:
    start = client_frame(b"4", fin=False)
    flood = client_frame(b"", opcode=frames.CONTINUATION, fin=False) * (frames.MAX_FRAGMENTS + 10)
    assert outcome([start + flood], max_message=1 << 20) == ([], frames.TOO_BIG)  # past MAX_FRAGMENTS
    # Their framing counts against the message bound too: 6 bytes each, so 1024 bytes are ~170 of them.
    messages, code = outcome([start + client_frame(b"", opcode=frames.CONTINUATION, fin=False) * 200], 1024)
    assert (messages, code) == ([], frames.TOO_BIG)
    # Within both bounds they are a message like any other.
    whole = start + client_frame(b"", opcode=frames.CONTINUATION, fin=False) * 100 \
        + client_frame(b"2", opcode=frames.CONTINUATION)
    assert outcome([whole]) == ([frames.Message(frames.TEXT, "42")], None)


@pytest.mark.parametrize(("payload", "code"), [
    (b"", None), (struct.pack("!H", 1000), None), (struct.pack("!H", 4999) + "κόσμε".encode(), None),
    (b"\x03", frames.PROTOCOL_ERROR), (struct.pack("!H", 1005), frames.PROTOCOL_ERROR),
    (struct.pack("!H", 2999), frames.PROTOCOL_ERROR), (struct.pack("!H", 5000), frames.PROTOCOL_ERROR),
    (struct.pack("!H", 1000) + b"\xed\xa0\x80", frames.INVALID_DATA),
])
def test_close_frames_are_checked(payload: bytes, code: int | None) -> None:
    messages, failed = outcome([client_frame(payload, opcode=frames.CLOSE)])
    assert failed == code
    assert messages == ([] if code else [frames.Message(frames.CLOSE, payload)])


def test_utf8_fails_on_the_fragment_that_breaks_it() -> None:
    reader = frames.Reader(4096)
    reader.feed(client_frame("κόσμε".encode() + b"\xf4", fin=False))  # an incomplete sequence: not yet wrong
    assert reader.next() is None
    reader.feed(client_frame(b"\x90", opcode=frames.CONTINUATION, fin=False))  # past U+10FFFF
    with pytest.raises(frames.ProtocolError) as broken:
        reader.next()
    assert broken.value.code == frames.INVALID_DATA
    # A sequence split across fragments is fine; left incomplete at the end, it is not.
    assert outcome([client_frame(b"\xce", fin=False) + client_frame(b"\xba", opcode=frames.CONTINUATION)]) \
        == ([frames.Message(frames.TEXT, "κ")], None)
    assert outcome([client_frame(b"a\xce", fin=False) + client_frame(b"", opcode=frames.CONTINUATION)]) \
        == ([], frames.INVALID_DATA)


def test_a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() -> None:
    assert outcome([bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big")]) == ([], frames.PROTOCOL_ERROR)


# Any frame, well-formed or not: opcodes (reserved ones too), FIN, RSV bits, masking, every length form.
frame_parts = st.tuples(
    st.sampled_from([frames.CONTINUATION, frames.TEXT, frames.BINARY, frames.CLOSE, frames.PING, frames.PONG,
                     0x3, 0xB]),
    st.booleans(),
    st.sampled_from([0, 0, 0, 0, 0, 1, 4]),
    st.sampled_from([True, True, True, True, False]),
    st.one_of(st.binary(max_size=140), st.text(max_size=40).map(str.encode),
              st.integers(0, 5100).map(lambda code: struct.pack("!H", code))),
    st.sampled_from([None, None, None, 126, 127]),
)


def any_frame(parts: tuple[int, bool, int, bool, bytes, int | None]) -> bytes:
    opcode, fin, rsv, masked, payload, form = parts
    return frame(opcode, payload, fin=fin, rsv=rsv, masked=masked, length_form=form)


streams = st.one_of(
    st.binary(max_size=600),
    st.lists(frame_parts, max_size=30).map(lambda parts: b"".join(any_frame(p) for p in parts)),
    st.lists(st.one_of(frame_parts.map(any_frame), st.binary(max_size=8)), max_size=30).map(b"".join),
)


@settings(max_examples=500, deadline=None)
@given(stream=streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
       max_message=st.sampled_from([1024, 4096]))
def test_any_stream_split_anywhere_reads_as_one_feed(stream: bytes, cuts: list[int], max_message: int) -> None:
    # Only ProtocolError may come out of the reader (anything else fails this test), and where the stream
    # is cut makes no difference to the messages or to the close code.
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *points, len(stream)])]
    assert outcome(chunks, max_message) == outcome([stream], max_message)


def read_through(chunks: list[bytes]) -> int:
    """Feed `chunks` to a reader and take every message (counted, not kept): how many there were."""
    reader = frames.Reader(1 << 22)
    count = 0
    for chunk in chunks:
        reader.feed(chunk)
        while reader.next() is not None:
            count += 1
    return count


def best_times(small: list[bytes], large: list[bytes], repeat: int = 9) -> tuple[float, float]:
    """The best CPU time of each (not wall-clock: the machine is shared), measured in turns."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, chunks in enumerate((small, large)):
            started = time.process_time()
            read_through(chunks)
            best[i] = min(best[i], time.process_time() - started)
    return best[0], best[1]


def tiny_frames(n: int) -> list[bytes]:
    return [client_frame(b"6", mask=b"abcd") * n]


def misaligned(n: int) -> list[bytes]:
    stream = client_frame(b"6", mask=b"abcd") * n
    return [stream[i:i + 7] for i in range(0, len(stream), 7)]


def one_frame_in_small_reads(n: int) -> list[bytes]:
    stream = client_frame(b"x" * (n * 128), opcode=frames.BINARY, mask=b"abcd")
    return [stream[i:i + 256] for i in range(0, len(stream), 256)]


def many_fragments(n: int) -> list[bytes]:
    size = max(1, n * 8 // frames.MAX_FRAGMENTS)
    parts = [client_frame(b"y" * size, opcode=frames.BINARY if i == 0 else frames.CONTINUATION,
                          fin=i == frames.MAX_FRAGMENTS - 1, mask=b"abcd") for i in range(frames.MAX_FRAGMENTS)]
    return [b"".join(parts)]


@pytest.mark.parametrize("stream", [tiny_frames, misaligned, one_frame_in_small_reads, many_fragments])
def test_the_cost_is_linear_in_the_bytes(stream: Callable[[int], list[bytes]]) -> None:
    # Eight times the bytes may cost eight times the time, and the margin here is four times that again
    # (a shared 2-core machine, caches); a cost quadratic in the bytes (re-summing fragments, re-copying
    # the buffer) would take 64 times and more.
    small, large = stream(2000), stream(16000)
    assert outcome(small, 1 << 22)[1] is None and outcome(large, 1 << 22)[1] is None
    fast, slow = best_times(small, large)
    assert slow / fast < 8 * 4, slow / fast
