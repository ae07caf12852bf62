"""RFC 6455 conformance of the websocket engine, against the real server: Autobahn|Testsuite's server cases.

Autobahn|Testsuite (crossbario/autobahn-testsuite, `autobahntestsuite/case/`)
runs on Python 2 only, and its server cases expect an echo server. Its cases
are reproduced here on a raw socket (`tests.support.probe`), each named by
its case number; where Autobahn expects the echo of a message, the message
here is a Socket.IO event whose ack proves it arrived whole (a
`price:subscribe` of an unknown asset is acked with the name it was sent, so
text comes back byte for byte). Sizes of the 9.x cases are scaled to this
gateway's `REALTIME_MAX_MESSAGE_BYTES` (128 KiB here): a message within it is
delivered, one over it is closed with 1009, in bounded time.

Where Autobahn accepts either a close frame or a dropped TCP connection, this
suite asks for the close frame with the code. Cases 6.4.3 and 6.4.4 (invalid
UTF-8 in the middle of one frame sent in chops) are met NON-STRICT, as
Autobahn calls it: the frame is checked when it is whole. Cases 6.4.1 and
6.4.2 (the same across fragments) are met strictly: the fragment that breaks
UTF-8 closes the connection before the message ends.

Runs on the lean engine, which ships by default and owns its frame layer.
`REALTIME_ENGINE=stock` (aiohttp's websocket reader under python-engineio)
fails 27 of these cases, among them: it takes unmasked client frames (RFC 6455
§5.1), close codes 1006, 5000 and 65535, endless fragmented messages (no
fragment or framing bound), answers every close with 1000, checks UTF-8 only
when a message is whole, and python-engineio ends the session on an empty
text message. So `REALTIME_TEST_ENGINE=stock` skips this module.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from realtime.engine.frames import MAX_FRAGMENTS
from tests.support import Gateway, free_port, launch, token
from tests.support.probe import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Probe, close_payload, frame

pytestmark = pytest.mark.skipif(os.environ.get("REALTIME_TEST_ENGINE", "lean") != "lean",
                                reason="the lean engine's frame layer (see the module's docstring)")

MAX_MESSAGE = 128 * 1024
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    suffix = str(free_port())
    gateway = launch(Path(tmp_path_factory.mktemp("rfc6455")), connect_rate=0, event_rate=0,
                     max_message_bytes=MAX_MESSAGE, instance_id=f"rfc-{suffix}")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def msgpack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Binary messages are Socket.IO packets with the msgpack serializer (with JSON the gateway takes none)."""
    suffix = str(free_port())
    gateway = launch(Path(tmp_path_factory.mktemp("rfc6455-msgpack")), connect_rate=0, event_rate=0,
                     max_message_bytes=MAX_MESSAGE, instance_id=f"rfc-msgpack-{suffix}", serializer="msgpack")
    yield gateway
    gateway.stop()


@pytest.fixture
async def probe(server: Gateway) -> AsyncIterator[Probe]:
    client = await Probe.open(server.url, {"token": token("rfc")})
    yield client
    await client.close()


@pytest.fixture
async def binary(msgpack_server: Gateway) -> AsyncIterator[Probe]:
    client = await Probe.open(msgpack_server.url, {"token": token("rfc")}, msgpack=True)
    yield client
    await client.close()


def echo(probe: Probe, name: str, size: int | None = None) -> tuple[int, bytes]:
    """An event the server acks with `name` in it; padded to exactly `size` bytes if asked."""
    ack_id, payload = probe.event("price:subscribe", name)
    pad = 0
    while size is not None and len(payload) != size:
        pad += size - len(payload)
        probe.acks -= 1
        ack_id, payload = probe.event("price:subscribe", name, "x" * pad)
    return ack_id, payload


async def echoed(probe: Probe, ack_id: int, name: str) -> None:
    ack = await probe.ack(ack_id)
    assert ack["rejected"] == [{"asset": name, "code": "UNKNOWN_ASSET"}], ack


async def still_served(probe: Probe) -> None:
    ack_id, payload = echo(probe, "after")
    probe.send(probe.opcode, payload)
    await echoed(probe, ack_id, "after")


async def message_answered(probe: Probe, case: str) -> None:
    """Autobahn sends its message and the broken frame back to back and expects the message's echo. Here the
    answer is an ack from a handler task, and failing the connection drops what is still being handled
    (RFC 6455 §7.1.7), so the broken frame is sent once the message is answered."""
    ack_id, payload = echo(probe, case)
    probe.send(TEXT, payload)
    await echoed(probe, ack_id, case)


async def pong(probe: Probe) -> bytes:
    received = await probe.read()
    assert received.opcode == PONG and received.fin, received
    return received.payload


def fragments(payload: bytes, size: int, opcode: int = TEXT) -> bytes:
    """`payload` as one message in fragments of `size` bytes."""
    parts = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(frame(opcode if i == 0 else CONTINUATION, part, fin=i == len(parts) - 1)
                    for i, part in enumerate(parts))


# 1.x: framing, text and binary messages of every length form.

@pytest.mark.parametrize(("case", "size", "chop"), [
    ("1.1.2", 125, None), ("1.1.3", 126, None), ("1.1.4", 127, None), ("1.1.5", 128, None),
    ("1.1.6", 65535, None), ("1.1.7", 65536, None), ("1.1.8", 65536, 997)])
async def test_1_1_text_messages_of_every_length(probe: Probe, case: str, size: int, chop: int | None) -> None:
    ack_id, payload = echo(probe, case, size)
    data = frame(TEXT, payload)
    if chop:
        await probe.chopped(data, chop)
    else:
        probe.write(data)
    await echoed(probe, ack_id, case)


async def test_1_1_1_an_empty_text_message_is_taken(probe: Probe) -> None:
    probe.send(TEXT)
    await still_served(probe)


@pytest.mark.parametrize(("case", "size", "chop"), [
    ("1.2.1", 0, None), ("1.2.2", 125, None), ("1.2.3", 126, None), ("1.2.4", 127, None), ("1.2.5", 128, None),
    ("1.2.6", 65535, None), ("1.2.7", 65536, None), ("1.2.8", 65536, 997)])
async def test_1_2_binary_messages_of_every_length(binary: Probe, case: str, size: int, chop: int | None) -> None:
    if not size:
        binary.send(BINARY)  # an empty message: not a packet, dropped
        await still_served(binary)
        return
    ack_id, payload = echo(binary, case, size)
    data = frame(BINARY, payload)
    if chop:
        await binary.chopped(data, chop)
    else:
        binary.write(data)
    await echoed(binary, ack_id, case)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535])
@pytest.mark.parametrize("form", [126, 127])
async def test_lengths_in_the_16_and_64_bit_forms_are_read(probe: Probe, size: int, form: int) -> None:
    # RFC 6455 §5.2: the length's forms. A longer form than needed is read as its value says.
    ack_id, payload = echo(probe, "long-form", max(size, 40))
    probe.send(TEXT, payload, length_form=form)
    await echoed(probe, ack_id, "long-form")


async def test_an_unmasked_client_frame_is_a_protocol_error(probe: Probe) -> None:
    # RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that is not masked".
    probe.send(TEXT, b"42", masked=False)
    assert await probe.closed_with() == PROTOCOL_ERROR


async def test_a_64_bit_length_with_the_top_bit_set_is_refused(probe: Probe) -> None:
    probe.write(bytes((0x81, 0xFF)) + (1 << 63).to_bytes(8, "big") + b"\x00" * 4)
    assert await probe.closed_with() in (PROTOCOL_ERROR, TOO_BIG)


# 2.x: pings and pongs.

@pytest.mark.parametrize(("case", "payload", "chop"), [
    ("2.1", b"", None), ("2.2", b"Hello, world!", None), ("2.3", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", None),
    ("2.4", b"\xfe" * 125, None), ("2.6", b"\xfe" * 125, 1)])
async def test_2_a_ping_is_answered_with_its_payload(probe: Probe, case: str, payload: bytes,
                                                     chop: int | None) -> None:
    if chop:
        await probe.chopped(frame(PING, payload), chop)
    else:
        probe.send(PING, payload)
    assert await pong(probe) == payload


async def test_2_5_a_ping_over_125_bytes_is_a_protocol_error(probe: Probe) -> None:
    probe.send(PING, b"\xfe" * 126)
    assert await probe.closed_with() == PROTOCOL_ERROR


async def test_2_7_to_2_9_unsolicited_pongs_are_ignored(probe: Probe) -> None:
    probe.send(PONG)  # 2.7
    probe.send(PONG, b"unsolicited pong payload")  # 2.8
    probe.send(PING, b"ping payload")  # 2.9
    assert await pong(probe) == b"ping payload"
    await still_served(probe)


@pytest.mark.parametrize(("case", "chop"), [("2.10", None), ("2.11", 1)])
async def test_2_10_ten_pings_get_ten_pongs_in_order(probe: Probe, case: str, chop: int | None) -> None:
    data = b"".join(frame(PING, f"payload-{i}".encode()) for i in range(10))
    if chop:
        await probe.chopped(data, chop)
    else:
        probe.write(data)
    assert [await pong(probe) for _ in range(10)] == [f"payload-{i}".encode() for i in range(10)]


# 3.x: reserved bits (no extension is ever negotiated).

@pytest.mark.parametrize(("case", "rsv", "opcode", "after_a_message", "chop"), [
    ("3.1", 1, TEXT, False, None), ("3.2", 2, TEXT, True, None), ("3.3", 3, TEXT, True, 10),
    ("3.4", 4, TEXT, True, 1), ("3.5", 5, BINARY, False, None), ("3.6", 6, PING, False, None),
    ("3.7", 7, CLOSE, False, None)])
async def test_3_a_reserved_bit_is_a_protocol_error(probe: Probe, case: str, rsv: int, opcode: int,
                                                    after_a_message: bool, chop: int | None) -> None:
    if after_a_message:
        await message_answered(probe, case)
    data = frame(opcode, close_payload(1000) if opcode == CLOSE else b"Hello, world!", rsv=rsv) + frame(PING)
    if chop:
        await probe.chopped(data, chop)
    else:
        probe.write(data)
    assert await probe.closed_with() == PROTOCOL_ERROR  # and no pong before it


# 4.x: reserved opcodes.

@pytest.mark.parametrize(("case", "opcode", "after_a_message"), [
    ("4.1.1", 3, False), ("4.1.2", 4, False), ("4.1.3", 5, True), ("4.1.4", 6, True), ("4.1.5", 7, True),
    ("4.2.1", 11, False), ("4.2.2", 12, False), ("4.2.3", 13, True), ("4.2.4", 14, True), ("4.2.5", 15, True)])
async def test_4_a_reserved_opcode_is_a_protocol_error(probe: Probe, case: str, opcode: int,
                                                       after_a_message: bool) -> None:
    if after_a_message:
        await message_answered(probe, case)
    probe.write(frame(opcode, b"reserved" if case[-1] != "1" else b"") + frame(PING))
    assert await probe.closed_with() == PROTOCOL_ERROR


# 5.x: fragmentation.

@pytest.mark.parametrize(("case", "opcode"), [("5.1", PING), ("5.2", PONG)])
async def test_5_1_fragmented_control_frames_are_protocol_errors(probe: Probe, case: str, opcode: int) -> None:
    probe.write(frame(opcode, b"fragment1", fin=False) + frame(CONTINUATION, b"fragment2"))
    assert await probe.closed_with() == PROTOCOL_ERROR


@pytest.mark.parametrize(("case", "chop", "ping"), [
    ("5.3", None, False), ("5.4", "frame", False), ("5.5", 1, False),
    ("5.6", None, True), ("5.7", "frame", True), ("5.8", 1, True)])
async def test_5_3_a_message_in_two_fragments_with_a_ping_between(probe: Probe, case: str, chop: object,
                                                                  ping: bool) -> None:
    ack_id, payload = echo(probe, case)
    frames = [frame(TEXT, payload[:9], fin=False), *([frame(PING, b"ping payload")] if ping else []),
              frame(CONTINUATION, payload[9:])]
    if chop == "frame":
        for each in frames:
            await probe.chopped(each, len(each))
    elif chop == 1:
        await probe.chopped(b"".join(frames), 1)
    else:
        probe.write(b"".join(frames))
    if ping:
        assert await pong(probe) == b"ping payload"  # before the message is whole
    await echoed(probe, ack_id, case)


@pytest.mark.parametrize(("case", "fin", "chop"), [
    ("5.9", True, None), ("5.10", True, "frame"), ("5.11", True, 1),
    ("5.12", False, None), ("5.13", False, "frame"), ("5.14", False, 1)])
async def test_5_9_a_continuation_without_a_message_is_a_protocol_error(probe: Probe, case: str, fin: bool,
                                                                         chop: object) -> None:
    frames = [frame(CONTINUATION, b"non-continuation payload", fin=fin), frame(TEXT, b"Hello, world!")]
    if chop == "frame":
        for each in frames:
            await probe.chopped(each, len(each))
    elif chop == 1:
        await probe.chopped(b"".join(frames), 1)
    else:
        probe.write(b"".join(frames))
    assert await probe.closed_with() == PROTOCOL_ERROR


async def test_5_15_a_stray_continuation_after_a_whole_message(probe: Probe) -> None:
    ack_id, payload = echo(probe, "5.15")
    probe.write(frame(TEXT, payload[:9], fin=False) + frame(CONTINUATION, payload[9:]))
    await echoed(probe, ack_id, "5.15")  # see message_answered
    probe.write(frame(CONTINUATION, b"fragment3", fin=False) + frame(TEXT, b"fragment4"))
    assert await probe.closed_with() == PROTOCOL_ERROR


@pytest.mark.parametrize(("case", "fin"), [("5.16", False), ("5.17", True)])
async def test_5_16_repeated_stray_continuations(probe: Probe, case: str, fin: bool) -> None:
    once = frame(CONTINUATION, b"fragment1", fin=fin) + frame(TEXT, b"fragment2", fin=False) \
        + frame(CONTINUATION, b"fragment3")
    probe.write(once + once)
    assert await probe.closed_with() == PROTOCOL_ERROR


async def test_5_18_a_new_message_inside_a_fragmented_one(probe: Probe) -> None:
    probe.write(frame(TEXT, b"fragment1", fin=False) + frame(TEXT, b"fragment2"))
    assert await probe.closed_with() == PROTOCOL_ERROR


@pytest.mark.parametrize("case", ["5.19", "5.20"])
async def test_5_19_pings_are_answered_while_a_message_is_incomplete(probe: Probe, case: str) -> None:
    ack_id, payload = echo(probe, case)
    parts = [payload[:4], payload[4:8], payload[8:12], payload[12:16], payload[16:]]
    probe.write(frame(TEXT, parts[0], fin=False) + frame(CONTINUATION, parts[1], fin=False)
                + frame(PING, b"pongme 1!"))
    assert await pong(probe) == b"pongme 1!"
    await asyncio.sleep(0.2)  # Autobahn waits 1 s here: the message stays open across it
    probe.write(frame(CONTINUATION, parts[2], fin=False) + frame(CONTINUATION, parts[3], fin=False)
                + frame(PING, b"pongme 2!"))
    assert await pong(probe) == b"pongme 2!"
    probe.send(CONTINUATION, parts[4])
    await echoed(probe, ack_id, case)


# 6.x: UTF-8 of text messages.

async def test_6_1_empty_fragments(probe: Probe) -> None:
    probe.write(frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"", fin=False) + frame(CONTINUATION))  # 6.1.2
    ack_id, payload = echo(probe, "6.1.3")
    probe.write(frame(TEXT, b"", fin=False) + frame(CONTINUATION, payload, fin=False) + frame(CONTINUATION))
    await echoed(probe, ack_id, "6.1.3")


HELLO = "Hello-µ@ßöäüàá-UTF-8!!"
KOSME = "κόσμε"


@pytest.mark.parametrize(("case", "text", "fragment"), [
    ("6.2.1", HELLO, None), ("6.2.2", HELLO, "boundary"), ("6.2.3", HELLO, 1), ("6.2.4", KOSME, 1)])
async def test_6_2_valid_utf8_whole_or_in_fragments(probe: Probe, case: str, text: str,
                                                    fragment: object) -> None:
    ack_id, payload = echo(probe, text)
    if fragment == "boundary":
        cut = payload.index("ß".encode())
        probe.write(frame(TEXT, payload[:cut], fin=False) + frame(CONTINUATION, payload[cut:]))
    elif fragment == 1:
        probe.write(fragments(payload, 1))
    else:
        probe.send(TEXT, payload)
    await echoed(probe, ack_id, text)


INVALID_KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"


@pytest.mark.parametrize(("case", "fragment"), [("6.3.1", None), ("6.3.2", 1)])
async def test_6_3_invalid_utf8_is_closed_with_1007(probe: Probe, case: str, fragment: int | None) -> None:
    probe.write(fragments(INVALID_KOSME, fragment) if fragment else frame(TEXT, INVALID_KOSME))
    assert await probe.closed_with() == INVALID_DATA


# 6.4.x: PART2 makes the text invalid (0x110000 in UTF-8's integer scheme); PART1 and PART3 are valid.
PART1 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
# 6.4.2 and 6.4.4 cut the same payload after its 12th and 13th octets: PART2 is the one octet that breaks it.
PAYLOAD_64 = PART1 + b"\xf4\x90\x80\x80" + b"edited"
PARTS = {"6.4.1": (PAYLOAD_64[:11], PAYLOAD_64[11:15], PAYLOAD_64[15:]),
         "6.4.2": (PAYLOAD_64[:12], PAYLOAD_64[12:13], PAYLOAD_64[13:])}


@pytest.mark.parametrize("case", ["6.4.1", "6.4.2"])
async def test_6_4_fail_fast_on_the_fragment_that_breaks_utf8(probe: Probe, case: str) -> None:
    part1, part2, _ = PARTS[case]
    probe.send(TEXT, part1, fin=False)
    with pytest.raises(TimeoutError):
        await probe.read(timeout=0.3)  # the first fragment is valid: nothing happens
    probe.send(CONTINUATION, part2, fin=False)
    assert await probe.closed_with() == INVALID_DATA  # before the third part is sent


@pytest.mark.parametrize(("case", "parts"), [("6.4.3", "6.4.1"), ("6.4.4", "6.4.2")])
async def test_6_4_3_invalid_utf8_in_chops_of_one_frame(probe: Probe, case: str, parts: str) -> None:
    part1, part2, _part3 = PARTS[parts]
    whole = frame(TEXT, PAYLOAD_64)
    head = len(whole) - len(PAYLOAD_64)
    cuts = [0, head + len(part1), head + len(part1) + len(part2), len(whole)]
    for start, end in itertools.pairwise(cuts):
        await probe.chopped(whole[start:end], len(whole))
        await asyncio.sleep(0.1)
    assert await probe.closed_with() == INVALID_DATA  # NON-STRICT: when the frame is whole


# 6.5-6.23 (case6_x_x.py): Markus Kuhn's UTF-8 decoder test sequences, each as a whole message and in
# fragments of one octet. Valid ones are taken (the connection serves on), invalid ones closed with 1007.
VALID_UTF8 = [
    b"hello\x24world", b"hello\xc2\xa2world", b"hello\xe2\x82\xacworld", b"hello\xf0\xa4\xad\xa2world", PART1,
    b"\x00", b"\xc2\x80", b"\xe0\xa0\x80", b"\xf0\x90\x80\x80", b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf",
    b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xef\xbf\xbe", b"\xf0\x9f\xbf\xbe",
    b"\xf4\x8f\xbf\xbe", b"\xef\xbf\xb9", b"\xef\xbf\xbc",
    *(PART1[:i] for i in (2, 5, 7, 9)),  # prefixes ending on a code point
]
INVALID_UTF8 = [
    *(PART1[:i] for i in (1, 3, 4, 6, 8, 10)),  # prefixes ending inside a code point
    b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf",
    b"\xfd\xbf\xbf\xbf\xbf\xbf", b"\xf4\x90\x80\x80",
    b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80", b"\x80\xbf\x80\xbf", bytes(range(0x80, 0xBF)),
    *(b"".join(bytes((i, 0x20)) for i in range(a, b)) for a, b in
      [(0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD)]),
    b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
    b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf",
    b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf"
    b"\xfd\xbf\xbf\xbf\xbf",
    b"\xfe", b"\xff", b"\xfe\xfe\xff\xff",
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xf8\x80\x80\x80\xaf", b"\xfc\x80\x80\x80\x80\xaf",
    b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf", b"\xf8\x87\xbf\xbf\xbf", b"\xfc\x83\xbf\xbf\xbf\xbf",
    b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xf8\x80\x80\x80\x80", b"\xfc\x80\x80\x80\x80\x80",
    b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf", b"\xed\xb0\x80", b"\xed\xbe\x80",
    b"\xed\xbf\xbf", b"\xed\xa0\x80\xed\xb0\x80", b"\xed\xad\xbf\xed\xbf\xbf", b"\xed\xaf\xbf\xed\xbf\xbf",
]


async def test_6_5_valid_utf8_sequences_are_taken(probe: Probe) -> None:
    for text in VALID_UTF8:
        probe.send(TEXT, text)
        probe.write(fragments(text, 1))
    await still_served(probe)


@pytest.mark.parametrize("fragment", [None, 1])
@pytest.mark.parametrize("text", INVALID_UTF8, ids=lambda text: text.hex()[:24])
async def test_6_5_invalid_utf8_sequences_are_closed_with_1007(server: Gateway, text: bytes,
                                                               fragment: int | None) -> None:
    probe = await Probe.open(server.url, {"token": token("rfc")})
    try:
        probe.write(fragments(text, fragment) if fragment else frame(TEXT, text))
        assert await probe.closed_with() == INVALID_DATA
    finally:
        await probe.close()


# 7.x: the close handshake.

async def test_7_1_1_a_message_then_a_close(probe: Probe) -> None:
    await message_answered(probe, "7.1.1")
    probe.send(CLOSE, close_payload(1000))
    assert await probe.closed_with() == 1000


@pytest.mark.parametrize(("case", "after"), [
    ("7.1.2", frame(CLOSE, close_payload(1000))), ("7.1.3", frame(PING, b"after close")),
    ("7.1.4", frame(TEXT, b'421["price:subscribe","7.1.4"]'))], ids=["7.1.2", "7.1.3", "7.1.4"])  # masks are random
async def test_7_1_nothing_after_a_close_is_answered(probe: Probe, case: str, after: bytes) -> None:
    probe.write(frame(CLOSE, close_payload(1000)) + after)
    received = await probe.read()
    assert received.opcode == CLOSE and received.payload == close_payload(1000), received  # and nothing else
    assert await probe.closed_with() is None


async def test_7_1_5_a_close_between_fragments_ends_the_message(probe: Probe) -> None:
    _ack_id, payload = echo(probe, "7.1.5")
    probe.write(frame(TEXT, payload[:9], fin=False) + frame(CLOSE, close_payload(1000))
                + frame(CONTINUATION, payload[9:]))
    assert await probe.closed_with() == 1000  # and no ack before it


async def test_7_1_6_a_large_message_then_a_close_then_a_ping(probe: Probe) -> None:
    # Autobahn: informational; the message may or may not be answered before the close is.
    _ack_id, payload = echo(probe, "7.1.6", MAX_MESSAGE // 2)
    probe.write(frame(TEXT, payload) + frame(CLOSE, close_payload(1000)) + frame(PING))
    while (received := await probe.read()).opcode != CLOSE:
        assert received.opcode == TEXT, received  # the ack, perhaps; never a pong
    assert received.payload == close_payload(1000)
    assert await probe.closed_with() is None


@pytest.mark.parametrize(("case", "payload", "code"), [
    ("7.3.1", b"", 1000), ("7.3.2", b"\x03", PROTOCOL_ERROR), ("7.3.3", close_payload(1000), 1000),
    ("7.3.4", close_payload(1000, b"Hello World!"), 1000), ("7.3.5", close_payload(1000, b"*" * 123), 1000),
    ("7.5.1", close_payload(1000, INVALID_KOSME), INVALID_DATA)])
async def test_7_3_close_payloads(probe: Probe, case: str, payload: bytes, code: int) -> None:
    probe.send(CLOSE, payload)
    assert await probe.closed_with() == code


async def test_7_3_6_a_close_reason_over_123_bytes_is_a_protocol_error(probe: Probe) -> None:
    probe.send(CLOSE, close_payload(1000, b"*" * 124))
    assert await probe.closed_with() == PROTOCOL_ERROR


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
async def test_7_7_valid_close_codes_are_echoed(probe: Probe, code: int) -> None:
    probe.send(CLOSE, close_payload(code))
    assert await probe.closed_with() == code


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
async def test_7_9_and_7_13_invalid_close_codes_are_protocol_errors(probe: Probe, code: int) -> None:
    probe.send(CLOSE, close_payload(code))
    assert await probe.closed_with() == PROTOCOL_ERROR


# 9.x and 10.1.1: limits, sized to REALTIME_MAX_MESSAGE_BYTES (Autobahn's 64 KiB-16 MiB against our 128 KiB).

@pytest.mark.parametrize(("case", "size"), [("9.1.1", 64 * 1024), ("9.1.1+", MAX_MESSAGE)])
async def test_9_1_text_within_the_bound_is_taken(probe: Probe, case: str, size: int) -> None:
    ack_id, payload = echo(probe, case, size)
    probe.send(TEXT, payload)
    await echoed(probe, ack_id, case)


async def test_9_2_binary_within_the_bound_is_taken(binary: Probe) -> None:
    ack_id, payload = echo(binary, "9.2.1", 64 * 1024)
    binary.send(BINARY, payload)
    await echoed(binary, ack_id, "9.2.1")


@pytest.mark.parametrize(("case", "opcode"), [("9.1.2", TEXT), ("9.2.2", BINARY)])
async def test_9_1_a_message_over_the_bound_is_closed_with_1009(probe: Probe, case: str, opcode: int) -> None:
    probe.send(opcode, b"*" * (2 * MAX_MESSAGE))
    assert await probe.closed_with() == TOO_BIG


async def test_9_1_a_huge_declared_length_is_closed_with_1009_from_the_header(probe: Probe) -> None:
    probe.write(bytes((0x81, 0xFF)) + (16 << 20).to_bytes(8, "big") + os.urandom(4))  # 9.1.6's 16 MiB
    assert await probe.closed_with() == TOO_BIG  # without waiting for its payload


@pytest.mark.parametrize("size", [64, 256, 1024, 4096, 16384, 65536])
async def test_9_3_a_message_in_fragments_of_every_size(probe: Probe, size: int) -> None:
    # 9.3.x sends 4 MiB in fragments of 64 B-4 MiB; here half the bound, whose framing fits in it.
    ack_id, payload = echo(probe, f"9.3-{size}", MAX_MESSAGE // 2)
    probe.write(fragments(payload, size))
    await echoed(probe, ack_id, f"9.3-{size}")


@pytest.mark.parametrize("size", [64, 256, 1024, 4096, 16384, 65536])
async def test_9_4_a_binary_message_in_fragments_of_every_size(binary: Probe, size: int) -> None:
    ack_id, payload = echo(binary, f"9.4-{size}", MAX_MESSAGE // 2)
    binary.write(fragments(payload, size, BINARY))
    await echoed(binary, ack_id, f"9.4-{size}")


@pytest.mark.parametrize("chop", [64, 128, 256, 512, 1024, 2048])
async def test_9_5_a_large_message_in_chops(probe: Probe, chop: int) -> None:
    # 9.5.x/9.6.x: 1 MiB in chops of 64-2048 octets; here 64 KiB.
    ack_id, payload = echo(probe, f"9.5-{chop}", 64 * 1024)
    await probe.chopped(frame(TEXT, payload), chop)
    await echoed(probe, ack_id, f"9.5-{chop}")


async def test_10_1_1_a_message_auto_fragmented_by_1300(probe: Probe) -> None:
    ack_id, payload = echo(probe, "10.1.1", 65536)
    probe.write(fragments(payload, 1300))
    await echoed(probe, ack_id, "10.1.1")


@pytest.mark.parametrize("fragment", [4096, 1, 0])
async def test_9_9_1_an_endless_fragmented_message_is_closed_with_1009(probe: Probe, fragment: int) -> None:
    # 9.9.1 sends frames of 4 KiB to an endless message for X seconds. Fragments of 1 byte pass the
    # fragment bound first; empty ones have only their framing, which counts against the byte bound too.
    probe.send(TEXT, b"4", fin=False)
    sent = 0
    started = time.monotonic()
    chunk = frame(CONTINUATION, b"x" * fragment, fin=False) * max(1, 16384 // (fragment + 6))
    try:
        while sent < 16 * MAX_MESSAGE:
            probe.write(chunk)
            await probe.writer.drain()
            sent += len(chunk)
    except ConnectionError:
        pass
    assert await probe.closed_with() == TOO_BIG
    assert time.monotonic() - started < 5


async def test_more_fragments_than_the_bound_are_closed_with_1009(probe: Probe) -> None:
    probe.write(frame(TEXT, b"4", fin=False) + frame(CONTINUATION, b"x", fin=False) * MAX_FRAGMENTS)
    assert await probe.closed_with() == TOO_BIG
