"""The JSON Socket.IO packet (engine/packets.py): orjson's encoding means what python-socketio's meant."""

from __future__ import annotations

import json
from typing import Any

import pytest
from socketio import packet as sio_packet

from realtime.engine.inbound import binary_packet_test
from realtime.engine.packets import JsonPacket, MsgpackPacket, OrjsonCodec

DEEP: list[Any] = []
for _ in range(300):
    DEEP = [DEEP]

PAYLOADS: list[Any] = [
    ["price:update", {"asset": "BTC_USDC_PERP", "bid": 6512345, "ask": 6512400, "decimals": 2, "seq": 7,
                      "ts": 1796694945123}],
    [{"ok": True, "prices": [], "rejected": [{"asset": "X", "code": "UNKNOWN_ASSET"}]}],
    {"sid": "abc", "pid": None},
    ["event", "naïve ✓ 日本", {"k": [1, 2.5, -0.0, 1e-07, 1e16, True, False, None]}],
    ["big", 2**70, {1: "int key", None: "null key"}],
    ["deep", DEEP],  # past orjson's depth limit: the stdlib encodes it
    ["surrogate", "\ud800"],
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_payload_decodes_to_what_the_stdlib_encoding_decodes_to(payload: Any) -> None:
    ours = JsonPacket(sio_packet.EVENT, namespace="/", data=payload, id=3).encode()
    theirs = sio_packet.Packet(sio_packet.EVENT, namespace="/", data=payload, id=3).encode()
    assert ours[:2] == theirs[:2] == "23"
    assert json.loads(ours[2:]) == json.loads(theirs[2:])
    # What JSON.parse reads back is also what the gateway's own decoder reads back.
    assert JsonPacket(encoded_packet=ours).data == sio_packet.Packet(encoded_packet=theirs).data


def test_ascii_payloads_without_floats_encode_byte_for_byte_as_before() -> None:
    for payload in PAYLOADS[:3]:
        assert JsonPacket(sio_packet.ACK, data=payload, id=9).encode() == \
            sio_packet.Packet(sio_packet.ACK, data=payload, id=9).encode()


def test_what_orjson_refuses_is_left_to_the_stdlib() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular"):
        OrjsonCodec.dumps(cyclic)
    assert OrjsonCodec.dumps([2**70]) == "[1180591620717411303424]"
    # Decoding keeps python-engineio's bound on integer sizes.
    with pytest.raises(ValueError):
        OrjsonCodec.loads("1" * 200)


def test_binary_payloads_are_still_binary_events_with_attachments() -> None:
    for data in [["file", b"\x00\x01"], ["nested", {"a": [1, {"b": bytearray(b"x")}]}]]:
        encoded = JsonPacket(sio_packet.EVENT, namespace="/", data=data).encode()
        assert isinstance(encoded, list) and encoded[0].startswith("51-")
    assert not JsonPacket.data_is_binary(["x", {"a": [1, "b", None]}])
    # Inbound, the JSON rule (type digit 5 or 6, attachments as bytes) applies to it; msgpack keeps its own.
    assert binary_packet_test(JsonPacket)("51-[\"x\"]") and not binary_packet_test(JsonPacket)("2[\"x\"]")
    assert not binary_packet_test(MsgpackPacket)("51-[\"x\"]")


def test_binary_detection_agrees_with_python_socketio_on_every_shape() -> None:
    shapes: list[Any] = [
        ["x", {"a": [1, "b", None, 2.5]}], ["x", b"raw"], ["x", {"deep": [[{"b": bytearray(b"1")}]]}],
        ["x", (b"in a tuple",)], ["x", {(1, 2): "tuple key"}], ["x", 2**70], ["x", {"m": memoryview(b"m")}],
        {"a": "b"}, [], "text", b"bytes", None, 5, ["deep", DEEP], ["deep bytes", [[[[b"x"]]]] * 2],
    ]
    for data in shapes:
        assert JsonPacket.data_is_binary(data) is sio_packet.Packet.data_is_binary(data), data
