"""Fan-out: delivering one price update to this pod's subscribers of its asset.

Every pod consumes the feed itself, so a tick goes to local clients only and
never through the manager (which would deliver it once per pod and wait for a
Redis PUBLISH per tick). Two implementations sit behind `Fanout`, chosen by
`REALTIME_FANOUT`:

- `direct` (default): the tick's Socket.IO packet is encoded once and framed
  once; the same bytes go to every websocket recipient whose writer is idle,
  joined with the other frames it gets in the same loop turn into one write.
  Everyone else (polling, mid-upgrade, backlogged) gets it through its
  `Writer` queue, so per-connection order holds (see `writer`).
- `stock`: python-socketio's own emit (a task per recipient), the baseline the
  benchmark compares against.

Delayed tiers (`feed.tiers`) send through the same path to their own rooms,
and `price:status` changes through `send_event` (queued, never collapsed).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from engineio import packet as eio_packet

from realtime.engine.server import SocketServer
from realtime.engine.writer import Writer, websocket_frame
from realtime.protocol import PRICE_UPDATE, PriceUpdate, asset_room


class Fanout(Protocol):
    async def send_price(self, update: PriceUpdate, room: str | None = None) -> int:
        """Deliver `update` to this pod's subscribers of its asset (or of `room`); return how many."""
        ...

    async def send_event(self, room: str, event: str, data: Any) -> int:
        """Deliver a rare event (`price:status`) to this pod's clients in `room`; return how many."""
        ...


class ManagerFanout:
    """python-socketio's own local emit (one task per recipient)."""

    def __init__(self, sio: SocketServer) -> None:
        self.sio = sio

    async def send_price(self, update: PriceUpdate, room: str | None = None) -> int:
        return await self.send_event(room or asset_room(update["asset"]), PRICE_UPDATE, update)

    async def send_event(self, room: str, event: str, data: Any) -> int:
        recipients = self.sio.room_size(room)
        await self.sio.emit_local(event, data, room)
        return recipients


class DirectFanout:
    """Encode once, frame once, write the same bytes to every idle websocket."""

    def __init__(self, sio: SocketServer) -> None:
        self.sio = sio
        self._dirty: list[Writer] = []  # writers holding direct frames for this loop turn

    async def send_price(self, update: PriceUpdate, room: str | None = None) -> int:
        return self._send(room or asset_room(update["asset"]), PRICE_UPDATE, update, update["asset"])

    async def send_event(self, room: str, event: str, data: Any) -> int:
        return self._send(room, event, data, None)

    def _send(self, room: str, event: str, data: Any, collapse: str | None) -> int:
        """Frame `event` once and write it to every writer in `room`; queued price ticks of `collapse` may merge."""
        writers = self.sio.room_writers(room)
        if not writers:
            return 0
        parts = self.sio.encode_event(event, data)
        # Engine.IO over websocket: a text message is "4" + the packet, binary goes as it is.
        frame = b"".join(websocket_frame("4" + part if isinstance(part, str) else part) for part in parts)
        # Packets for the queue path (polling clients encode binary as base64 themselves).
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        dirty = self._dirty
        schedule = not dirty
        for writer in writers:
            pending = writer.has_pending
            if writer.write_direct(frame):
                if not pending:
                    dirty.append(writer)
            elif len(packets) == 1 and collapse is not None:
                writer.put_price(collapse, packets[0])
            else:
                for packet in packets:  # binary attachments and other events: never collapsed
                    writer.put_nowait(packet)
        if schedule and dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        return len(writers)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush()


def fanout(sio: SocketServer, kind: str) -> Fanout:
    """The fan-out named by `REALTIME_FANOUT`."""
    return ManagerFanout(sio) if kind == "stock" else DirectFanout(sio)
