"""`Emitter`: durable private events from a Python back end, with the same guarantee as the API.

    emitter = Emitter("redis://redis:6379/0", channel="socketio")
    offset = await emitter.emit("order:update", {"id": 7}, user="42")

`emit` returns once the event is stored in the log (its offset), and raises
on a Redis error or timeout: then the event may or may not be stored, so a
retry may deliver it twice, never zero times. `channel` is the gateways'
namespace: their `REALTIME_NAMESPACE` if set, else their `REALTIME_MANAGER_CHANNEL`
(see `realtime.namespace`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from realtime.events import validation
from realtime.events.log import RedisLog
from realtime.events.offsets import Offset

# History kept when no gateway has said how long (the default window plus margins).
DEFAULT_KEEP = 180.0


class Emitter:
    def __init__(self, url: str, *, channel: str = "socketio", timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.log = RedisLog(url, channel, keep=DEFAULT_KEEP, timeout=timeout)

    async def emit(self, event: str, data: Any = None, *, user: str | None = None, room: str | None = None) -> Offset:
        """Store `event` for `user` (or `room`: `user:<sub>` / `role:<role>`); return its offset.

        Raises `realtime.protocol.GatewayError` for an invalid event or room,
        and redis-py's errors or TimeoutError when Redis is down or hung.
        """
        validation.event_name(event)
        if (user is None) == (room is None):
            raise ValueError("give exactly one of user and room")
        target = validation.user(user) if user is not None else validation.room(room)
        async with asyncio.timeout(self.timeout):
            offset = await self.log.append(target, event, orjson.dumps(data))
        assert offset is not None  # only a routed stream entry can be a duplicate
        return offset

    async def aclose(self) -> None:
        await self.log.close()

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
