"""One send path: only `realtime/send/delivery.py` encodes, frames and writes events for rooms.

Ticks, `price:status`, private events and their replays go through
`realtime.send.delivery.send`; a new kind of room event (order books,
trades, candles, channel events, state updates) must too, rather than grow a
loop of its own that drifts (one flushing per batch, one per loop turn).
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "realtime"
# What a send loop does: encode a packet, frame it, write it directly or queue a tick on a writer.
SEND_STEPS = re.compile(r"\.encode_packet\(|websocket_frame\(|\.write_direct\(|\.put_price\(")
# The engine makes frames of its own (the handshake, a queued packet); the send path is the one other place.
ALLOWED = {PACKAGE / "send" / "delivery.py"}


def test_only_the_send_path_encodes_frames_and_writes_room_events() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in ALLOWED or path.parent.name == "engine":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SEND_STEPS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "send through realtime.send.delivery.send instead:\n" + "\n".join(offenders)


def test_the_rule_sees_a_send_loop() -> None:
    assert SEND_STEPS.search("frame = websocket_frame('4' + part)")
    assert SEND_STEPS.search("if writer.write_direct(frame):")
    assert SEND_STEPS.search((PACKAGE / "send" / "delivery.py").read_text())
