"""Client events of channels: `channel:subscribe`, `channel:unsubscribe` (SPEC §10).

A subscription joins the room `channel:<name>` once `ChannelAccess` allows it;
the room's events come through the event log with their offsets, like a
user's. Subscriptions are recorded in the connection's recovery session; a
recovery asks again (`vet`, for channels and for channels' states) and
answers `channel:closed {channel, code}` for each one no longer allowed,
which is then not restored. An `auth:refresh` asks again too (`recheck`):
what the new token is refused is left, with `channel:closed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from realtime.channels import names
from realtime.channels.access import ChannelAccess
from realtime.clients.connection import Connection
from realtime.clients.handlers import Gateway
from realtime.engine.server import SocketServer
from realtime.events.state.store import parse_room
from realtime.principal import Principal
from realtime.protocol import (
    CHANNEL_CLOSED,
    CHANNEL_SUBSCRIBE,
    CHANNEL_UNSUBSCRIBE,
    ChannelAck,
    ChannelClosed,
    ErrorCode,
    GatewayError,
)
from realtime.rooms import user_room


def requested(payload: Any) -> Any:
    """The `channel` of a `{"channel": ...}` payload (a bare string is accepted too)."""
    if isinstance(payload, dict) and set(payload) == {"channel"}:
        return payload["channel"]
    if isinstance(payload, str):
        return payload
    raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"channel": "<namespace>:<id>"}')


class Channels:
    def __init__(self, gateway: Gateway, sio: SocketServer, access: ChannelAccess, *,
                 max_channels: int) -> None:
        self.gateway = gateway
        self.sio = sio
        self.access = access
        self.max_channels = max_channels
        gateway.handle(CHANNEL_SUBSCRIBE, self.subscribe)
        gateway.handle(CHANNEL_UNSUBSCRIBE, self.unsubscribe)

    async def subscribe(self, conn: Connection, payload: Any = None, *_: Any) -> ChannelAck:
        channel = names.channel(requested(payload))
        room = names.room(channel)
        if room not in conn.channels and len(conn.channels) >= self.max_channels:
            raise GatewayError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.max_channels} channels per connection")
        await self.access.check(conn.principal, channel)
        # The hook may take seconds: the connection may be gone by then.
        if room not in conn.channels and self.sio.connected(conn.sid):
            conn.channels.add(room)
            await self.sio.enter_room(conn.sid, room)
            self.gateway.follow(conn)
        return {"ok": True, "channel": channel}

    async def unsubscribe(self, conn: Connection, payload: Any = None, *_: Any) -> ChannelAck:
        channel = names.channel(requested(payload))
        room = names.room(channel)
        if room in conn.channels:
            conn.channels.discard(room)
            await self.sio.leave_room(conn.sid, room)
            self.gateway.follow(conn)
        return {"ok": True, "channel": channel}

    async def vet(self, conn: Connection, rooms: list[str]) -> list[str]:
        """Recovery: the channel and state rooms of `rooms` that `conn` may still have; `channel:closed`
        (in `conn.notices`) for each channel no longer allowed."""
        kept, owners = self._owners(conn, rooms)
        verdicts = await self._verdicts(conn.principal, owners.values())
        for channel, code in verdicts.items():
            if code is not None:
                notice: ChannelClosed = {"channel": channel, "code": code}
                conn.notices.append([CHANNEL_CLOSED, notice])
        kept += [room for room, channel in owners.items() if verdicts[channel] is None]
        channels = [room for room in kept if room.startswith(names.ROOM_PREFIX)][: self.max_channels]
        states = [room for room in kept if not room.startswith(names.ROOM_PREFIX)][: self.max_channels]
        conn.channels.update(channels)
        conn.states.update(states)
        return [*channels, *states]

    async def recheck(self, conn: Connection, principal: Principal) -> None:
        """After `auth:refresh` with `principal`: leave the channels (and their states) it is refused, each
        with `channel:closed`. A hook that cannot answer now closes nothing."""
        _, owners = self._owners(conn, [*conn.channels, *conn.states])
        verdicts = await self._verdicts(principal, owners.values())
        for channel, code in verdicts.items():
            if code != ErrorCode.FORBIDDEN.value:
                continue
            for room in [room for room, owner in owners.items() if owner == channel]:
                conn.channels.discard(room)
                conn.states.discard(room)
                await self.sio.leave_room(conn.sid, room)
            notice: ChannelClosed = {"channel": channel, "code": code}
            await self.sio.emit(CHANNEL_CLOSED, notice, to=conn.sid, ignore_queue=True)

    def _owners(self, conn: Connection, rooms: list[str]) -> tuple[list[str], dict[str, str]]:
        """(the user's own state rooms of `rooms`, each channel or channel-state room -> its channel)."""
        own: list[str] = []
        owners: dict[str, str] = {}
        for room in rooms:
            channel = names.of_room(room)
            state = parse_room(room)
            if state is not None:
                channel = names.of_room(state.owner)
                if channel is None:
                    # A user's own state: the session is that user's.
                    if conn.principal.sub is not None and state.owner == user_room(conn.principal.sub):
                        own.append(room)
                    continue
            if channel is not None:
                owners[room] = channel
        return own, owners

    async def _verdicts(self, principal: Principal, channels: Iterable[str]) -> dict[str, str | None]:
        wanted = list(dict.fromkeys(channels))
        return dict(zip(wanted, await asyncio.gather(*(self._verdict(principal, c) for c in wanted)), strict=True))

    async def _verdict(self, principal: Principal, channel: str) -> str | None:
        """None if `principal` may have `channel`, else the code of the refusal."""
        try:
            await self.access.check(principal, channel)
        except GatewayError as error:
            return error.code.value
        return None
