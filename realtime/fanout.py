"""Fan-out: delivering one price update to this pod's subscribers of its asset.

Every pod consumes the feed itself, so a tick goes to local clients only and
never through the manager (which would deliver it once per pod and wait for a
Redis PUBLISH per tick). The stock python-socketio emit is the baseline; a
faster send path plugs in behind the same `Fanout` interface.
"""

from __future__ import annotations

from typing import Protocol

import socketio

from .protocol import PRICE_UPDATE, PriceUpdate, asset_room


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
        recipients = len(self.sio.manager.rooms.get("/", {}).get(room, ()))
        # The base AsyncManager.emit is the local delivery; the Redis manager's
        # own emit would also publish the tick to every other pod.
        await socketio.AsyncManager.emit(self.sio.manager, PRICE_UPDATE, update, namespace="/", room=room)
        return recipients
