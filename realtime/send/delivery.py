"""The one send path: an event to every member of a room on this pod, encoded once and framed once.

Price ticks (`fanout`), `price:status`, private events from the log
(`realtime.events.reader`) and their replays all go through `send`, and so
will every other kind of room event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engineio import packet as eio_packet

from realtime.engine.frames import websocket_frame
from realtime.engine.server import SocketServer
from realtime.engine.writer import Writer


def send(sio: SocketServer, writers: Sequence[Writer], args: Sequence[Any], *, collapse: str | None = None) -> int:
    """Send the Socket.IO event `args` (`[event, *arguments]`) to `writers`; return how many.

    `writers` are one room's members on this pod (`sio.room_writers(room)`)
    or a single connection's writer (`sio.writer_of(sid)`). The event is
    encoded once and framed once for all of them. Each writer that can take
    the frame now (an idle websocket, see `Writer.write_direct`) holds it
    for its one write at the end of this loop turn; the others get it on
    their queue, behind what is already there, so per-connection order holds.
    With `collapse` (an asset name), a single-packet event queued behind a
    backlog may replace the queued event of the same `collapse` key
    (`Writer.put_price`: only the newest price matters); without it nothing
    is ever dropped. Binary attachments are never collapsed.
    """
    if not writers:
        return 0
    parts = sio.encode_packet(list(args))
    # Engine.IO over websocket: a text message is "4" + the packet, binary goes as it is.
    frame = b"".join(websocket_frame("4" + part if isinstance(part, str) else part) for part in parts)
    # Packets for the queue path (polling clients encode binary as base64 themselves).
    packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
    key = collapse if len(packets) == 1 else None
    for writer in writers:
        if writer.write_direct(frame):
            continue
        if key is not None:
            writer.put_price(key, packets[0])
        else:
            for packet in packets:
                writer.put_nowait(packet)
    return len(writers)
