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
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from .protocol import PRICE_UPDATE, PriceUpdate, asset_room
from .writer import Writer, websocket_frame

NAMESPACE = "/"


class Fanout(Protocol):
    async def send_price(self, update: PriceUpdate) -> int:
        """Deliver `update` to this pod's subscribers of its asset; return how many."""
        ...


class ManagerFanout:
    """python-socketio's own local emit (one task per recipient)."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def send_price(self, update: PriceUpdate) -> int:
        room = asset_room(update["asset"])
        recipients = len(self.sio.manager.rooms.get(NAMESPACE, {}).get(room, ()))
        # The base AsyncManager.emit is the local delivery; the Redis manager's
        # own emit would also publish the tick to every other pod.
        await socketio.AsyncManager.emit(self.sio.manager, PRICE_UPDATE, update, namespace=NAMESPACE, room=room)
        return recipients


class DirectFanout:
    """Encode once, frame once, write the same bytes to every idle websocket."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self._dirty: list[Writer] = []  # writers holding direct frames for this loop turn

    async def send_price(self, update: PriceUpdate) -> int:
        # python-socketio's rooms: rooms[namespace][room] maps sid -> engine.io sid.
        room = self.sio.manager.rooms.get(NAMESPACE, {}).get(asset_room(update["asset"]))
        if not room:
            return 0
        parts = self._encode(update)
        # Engine.IO over websocket: a text message is "4" + the packet, binary goes as it is.
        frame = b"".join(websocket_frame("4" + part if isinstance(part, str) else part) for part in parts)
        # Packets for the queue path (polling clients encode binary as base64 themselves).
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        sockets = self.sio.eio.sockets
        dirty = self._dirty
        schedule = not dirty
        sent = 0
        for eio_sid in room.values():
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            writer: Writer = socket.queue
            sent += 1
            pending = writer.has_pending
            if writer.write_direct(frame):
                if not pending:
                    dirty.append(writer)
            elif len(packets) == 1:
                writer.put_price(update["asset"], packets[0])
            else:
                for packet in packets:  # binary attachments: never collapsed
                    writer.put_nowait(packet)
        if schedule and dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        return sent

    def _encode(self, update: PriceUpdate) -> list[str | bytes]:
        """The tick as Socket.IO packet parts: one text part (JSON) or binary (msgpack)."""
        encoded = self.sio.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=[PRICE_UPDATE, update]).encode()
        return encoded if isinstance(encoded, list) else [encoded]

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush()


def fanout(sio: socketio.AsyncServer, kind: str) -> Fanout:
    """The fan-out named by `REALTIME_FANOUT`."""
    return ManagerFanout(sio) if kind == "stock" else DirectFanout(sio)
