"""Fan-out: delivering one price update to this pod's subscribers of its asset.

Every pod consumes the feed itself, so a tick goes to local clients only and
never through the manager (which would deliver it once per pod and wait for a
Redis PUBLISH per tick). Two implementations sit behind `Fanout`, chosen by
`REALTIME_FANOUT`:

- `direct` (default): the one send path, `realtime.send.delivery.send`: the
  tick's Socket.IO packet is encoded once and framed once; the same bytes go
  to every websocket recipient whose writer is idle, joined with the other
  frames it gets in the same loop turn into one write. Everyone else
  (polling, mid-upgrade, backlogged) gets it through its `Writer` queue, so
  per-connection order holds (see `realtime.engine.writer`).
- `stock`: python-socketio's own emit (a task per recipient), a diagnostic:
  the baseline the benchmark compares against.

Delayed tiers (`feed.tiers`) send through the same path to their own rooms,
and `price:status` changes and book updates (`realtime.books`, one room per
asset and depth) through `send_event` (queued, never collapsed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from realtime.engine.server import SocketServer
from realtime.protocol import PRICE_UPDATE, PriceUpdate
from realtime.rooms import asset_room
from realtime.send.delivery import send


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
    """The one send path (`delivery.send`): encode once, frame once, write the same bytes to every idle websocket."""

    def __init__(self, sio: SocketServer) -> None:
        self.sio = sio

    async def send_price(self, update: PriceUpdate, room: str | None = None) -> int:
        writers = self.sio.room_writers(room or asset_room(update["asset"]))
        return send(self.sio, writers, [PRICE_UPDATE, update], collapse=update["asset"])

    async def send_event(self, room: str, event: str, data: Any) -> int:
        return send(self.sio, self.sio.room_writers(room), [event, data])


async def deliver(fanout: Fanout, room: str, event: str, data: Any, log: logging.Logger, what: str) -> None:
    """`send_event` for a loop that must go on (the feed's, a timer's): a failure is logged, never raised."""
    try:
        await fanout.send_event(room, event, data)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s: %s to %s failed", what, event, room)


def fanout(sio: SocketServer, kind: str) -> Fanout:
    """The fan-out named by `REALTIME_FANOUT`."""
    return ManagerFanout(sio) if kind == "stock" else DirectFanout(sio)
