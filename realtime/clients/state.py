"""Client events of keyed state: `state:subscribe`, `state:unsubscribe` (SPEC §10).

`{"name"}` is the user's own state, `{"name", "channel"}` a channel's
(authorised as the channel). The ack is the snapshot with its version; the
connection then gets every `state:update` after it. The snapshot is read and
the room joined while the log reader delivers nothing, so no update falls
between them: the ack leaves with the connection's next write, before any
update the reader delivers afterwards, and an update that was already on its
way carries a version the snapshot has (a client ignores those).
"""

from __future__ import annotations

from typing import Any

from realtime.backplane.connections import REDIS_ERRORS
from realtime.channels import names
from realtime.channels.access import ChannelAccess
from realtime.clients.connection import Connection
from realtime.clients.handlers import Gateway
from realtime.engine.server import SocketServer
from realtime.events.reader import LogReader
from realtime.events.state import ops
from realtime.events.state.service import States
from realtime.events.state.store import StateRef
from realtime.protocol import STATE_SUBSCRIBE, STATE_UNSUBSCRIBE, ErrorCode, GatewayError, StateAck


class StateSubscriptions:
    def __init__(self, gateway: Gateway, sio: SocketServer, states: States, access: ChannelAccess,
                 reader: LogReader, *, max_states: int) -> None:
        self.gateway = gateway
        self.sio = sio
        self.states = states
        self.access = access
        self.reader = reader
        self.max_states = max_states
        gateway.handle(STATE_SUBSCRIBE, self.subscribe)
        gateway.handle(STATE_UNSUBSCRIBE, self.unsubscribe)

    async def _ref(self, conn: Connection, payload: Any, *, check: bool) -> StateRef:
        if not isinstance(payload, dict) or not set(payload) <= {"name", "channel"} or "name" not in payload:
            raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"name"} or {"name", "channel"}')
        name = ops.name(payload["name"])
        if "channel" in payload:
            channel = names.channel(payload["channel"])
            if check:
                await self.access.check(conn.principal, channel)
            return StateRef.of(name, channel=channel)
        if conn.principal.sub is None:
            raise GatewayError(ErrorCode.FORBIDDEN, "a user's state needs a signed-in user")
        return StateRef.of(name, user=conn.principal.sub)

    async def subscribe(self, conn: Connection, payload: Any = None, *_: Any) -> StateAck:
        ref = await self._ref(conn, payload, check=True)
        if ref.room not in conn.states and len(conn.states) >= self.max_states:
            raise GatewayError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.max_states} states per connection")
        async with self.reader.quiet():
            try:
                snapshot = await self.states.snapshot(ref)
            except REDIS_ERRORS:
                raise GatewayError(ErrorCode.UNAVAILABLE, "Redis is unavailable; retry") from None
            if ref.room not in conn.states and self.sio.connected(conn.sid):
                conn.states.add(ref.room)
                await self.sio.enter_room(conn.sid, ref.room)
        self.gateway.follow(conn)
        ack: StateAck = {"ok": True, **snapshot}  # type: ignore[typeddict-item]
        return ack

    async def unsubscribe(self, conn: Connection, payload: Any = None, *_: Any) -> dict[str, Any]:
        ref = await self._ref(conn, payload, check=False)
        if ref.room in conn.states:
            conn.states.discard(ref.room)
            await self.sio.leave_room(conn.sid, ref.room)
            self.gateway.follow(conn)
        return {"ok": True, **ref.head()}
