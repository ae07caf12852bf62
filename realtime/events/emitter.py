"""`Emitter`: durable private events and keyed state from a Python back end, with the API's guarantees.

    emitter = Emitter("redis://redis:6379/0", channel="socketio")
    offset = await emitter.emit("order:update", {"id": 7}, user="42")
    offset = await emitter.emit("bot:trade", {"id": 9}, room="channel:bot:42")
    version = await emitter.state("positions", [{"op": "merge", "key": "12345",
                                                 "changes": {"profit": "245.50"}}], user="42")

`emit` returns once the event is stored in the log (its offset), and raises
on a Redis error or timeout: then the event may or may not be stored, so a
retry may deliver it twice, never zero times. `channel` is the gateways'
namespace: their `REALTIME_NAMESPACE` if set, else their `REALTIME_MANAGER_CHANNEL`
(see `realtime.namespace`). `state` follows `POST /api/v1/state`: it returns
the state's new version once stored, and refuses what the API refuses
(`limits`: the gateways' `REALTIME_STATE_MAX_KEYS` and
`REALTIME_STATE_MAX_VALUE_BYTES`) with a GatewayError, changing nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from realtime.channels import names
from realtime.events import validation
from realtime.events.log import RedisLog
from realtime.events.offsets import Offset
from realtime.events.state.ops import Limits, parse_ops
from realtime.events.state.ops import name as state_name
from realtime.events.state.store import RedisStates, StateRef

# History kept when no gateway has said how long (the default window plus margins).
DEFAULT_KEEP = 180.0


class Emitter:
    def __init__(self, url: str, *, channel: str = "socketio", timeout: float = 2.0,
                 limits: Limits | None = None) -> None:
        self.timeout = timeout
        self.log = RedisLog(url, channel, keep=DEFAULT_KEEP, timeout=timeout)
        self.limits = limits or Limits()
        self.states = RedisStates(url, channel, keep=DEFAULT_KEEP, timeout=timeout, limits=self.limits)

    async def emit(self, event: str, data: Any = None, *, user: str | None = None, room: str | None = None) -> Offset:
        """Store `event` for `user` (or `room`: `user:<sub>` / `role:<role>`); return its offset.

        Raises `realtime.protocol.GatewayError` for an invalid event or room, or `data` larger than
        `validation.MAX_DATA_BYTES` as JSON (PAYLOAD_TOO_LARGE), and redis-py's errors or TimeoutError
        when Redis is down or hung.
        """
        validation.event_name(event)
        if (user is None) == (room is None):
            raise ValueError("give exactly one of user and room")
        target = validation.user(user) if user is not None else validation.room(room)
        text = validation.data_text(data)
        async with asyncio.timeout(self.timeout):
            offset = await self.log.append(target, event, text)
        assert offset is not None  # only a routed stream entry can be a duplicate
        return offset

    async def state(self, name: str, ops: list[dict[str, Any]], *, user: str | None = None,
                    channel: str | None = None) -> int:
        """Apply `ops` (set / merge / delete) to state `name` of `user` or `channel`; its new version.

        Raises GatewayError for a request the API would refuse (nothing is changed), and redis-py's
        errors or TimeoutError when Redis is down or hung (the write may or may not be stored).
        """
        if (user is None) == (channel is None):
            raise ValueError("give exactly one of user and channel")
        parsed = parse_ops(ops, self.limits)
        ref = StateRef(state_name(name), validation.user(user)) if user is not None else \
            StateRef.of(state_name(name), channel=names.channel(channel))
        async with asyncio.timeout(self.timeout):
            return await self.states.write(ref, parsed)

    async def aclose(self) -> None:
        await self.log.close()
        await self.states.close()

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
