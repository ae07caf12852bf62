"""Trade and candle events of a connection (SPEC §9): `trades:subscribe` / `:unsubscribe`,
`candles:subscribe` / `:unsubscribe`.

A connection joins `trades:<A>` or `candles:<A>:<interval>` (a delayed one
`candles:<A>:<interval>@<delay>`); its ack is read from this pod's memory
right after the join, with no wait in between, so the room's next event is
the one that follows the ack (a pod that was not hearing the asset first
takes the store's copy: `Market.ready`). The `assets` claim applies; a delayed
connection gets `FORBIDDEN` for trades, and only bars that closed at least its
delay ago (no open bar). On recovery the recorded rooms are joined again.
"""

from __future__ import annotations

from typing import Any

from realtime.clients.connection import Connection
from realtime.clients.handlers import Gateway
from realtime.engine.server import SocketServer
from realtime.principal import Principal
from realtime.protocol import (
    CANDLES_SUBSCRIBE,
    CANDLES_UNSUBSCRIBE,
    TRADES_SUBSCRIBE,
    TRADES_UNSUBSCRIBE,
    BookUnsubscribeAck,
    CandlesAck,
    ErrorCode,
    GatewayError,
    TradesAck,
)
from realtime.rooms import candles_room, room_market, trades_room
from realtime.trades.candles import INTERVALS
from realtime.trades.service import Market

BAD_TRADES = 'expected {"asset": "<name>", "history": <count>}'
BAD_CANDLES = 'expected {"asset": "<name>", "interval": "<interval>", "history": <count>}'


class TradeHandlers:
    def __init__(self, gateway: Gateway, market: Market) -> None:
        self.gateway = gateway
        self.sio: SocketServer = gateway.sio
        self.market = market
        self.max_trades = gateway.settings.trades_history
        self.max_candles = gateway.settings.candles_history
        self.max_rooms = gateway.settings.max_subscriptions
        gateway.handle(TRADES_SUBSCRIBE, self.subscribe_trades)
        gateway.handle(TRADES_UNSUBSCRIBE, self.unsubscribe_trades)
        gateway.handle(CANDLES_SUBSCRIBE, self.subscribe_candles)
        gateway.handle(CANDLES_UNSUBSCRIBE, self.unsubscribe_candles)
        gateway.extend(rejoin=self.rejoin, entitle=self.entitle)

    async def subscribe_trades(self, conn: Connection, payload: Any = None, *_: Any) -> TradesAck:
        asset = self._asset(conn, payload, BAD_TRADES)
        if conn.principal.delay:
            raise GatewayError(ErrorCode.FORBIDDEN, f"trades are real-time only; this connection is delayed by "
                                                    f"{conn.principal.delay} s")
        count = _history(payload, self.max_trades, BAD_TRADES)
        await self.market.ready(asset)
        await self._join(conn, trades_room(asset), trades_room(asset))
        return {"ok": True, "asset": asset, "trades": self.market.trades(asset, count)}

    async def unsubscribe_trades(self, conn: Connection, payload: Any = None, *_: Any) -> BookUnsubscribeAck:
        asset = self._asset(conn, payload, 'expected {"asset": "<name>"}', check_rights=False)
        await self._leave(conn, trades_room(asset), trades_room(asset))
        return {"ok": True}

    async def subscribe_candles(self, conn: Connection, payload: Any = None, *_: Any) -> CandlesAck:
        asset = self._asset(conn, payload, BAD_CANDLES)
        interval = _interval(payload)
        count = _history(payload, self.max_candles, BAD_CANDLES)
        delay = conn.principal.delay
        await self.market.ready(asset)
        await self._join(conn, candles_room(asset, interval, 0), candles_room(asset, interval, delay))
        return {"ok": True, "asset": asset, "interval": interval,
                "candles": self.market.candles(asset, interval, count, delay)}

    async def unsubscribe_candles(self, conn: Connection, payload: Any = None, *_: Any) -> BookUnsubscribeAck:
        asset = self._asset(conn, payload, 'expected {"asset": "<name>", "interval": "<interval>"}',
                            check_rights=False)
        interval = _interval(payload)
        await self._leave(conn, candles_room(asset, interval, 0), candles_room(asset, interval, conn.principal.delay))
        return {"ok": True}

    async def _join(self, conn: Connection, name: str, room: str) -> None:
        """Join `room`, recorded with the session as `name` (the real-time room's name)."""
        if name in conn.markets:
            return
        if len(conn.markets) >= self.max_rooms:
            raise GatewayError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                               f"at most {self.max_rooms} trade and candle subscriptions per connection")
        await self.sio.enter_room(conn.sid, room)
        conn.markets.add(name)
        self.gateway.follow(conn)

    async def _leave(self, conn: Connection, name: str, room: str) -> None:
        if name in conn.markets:
            conn.markets.discard(name)
            await self.sio.leave_room(conn.sid, room)
            self.gateway.follow(conn)

    def _asset(self, conn: Connection, payload: Any, expected: str, *, check_rights: bool = True) -> str:
        if not isinstance(payload, dict):
            raise GatewayError(ErrorCode.BAD_REQUEST, expected)
        name = payload.get("asset")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise GatewayError(ErrorCode.BAD_REQUEST, "asset is a non-empty string of at most 64 characters")
        asset = self.gateway.catalog.get(name)
        if asset is None:
            raise GatewayError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {name!r}")
        if check_rights and not conn.principal.may_see(asset.name):
            raise GatewayError(ErrorCode.FORBIDDEN, f"the token does not allow {asset.name}")
        return asset.name

    def _room(self, conn: Connection, name: str) -> str | None:
        """The room a recorded name stands for on this connection; None if it is not (or no longer) allowed."""
        found = room_market(name)
        if found is None or found[1] not in self.market.tapes or not conn.principal.may_see(found[1]):
            return None
        kind, asset, interval = found
        if kind == "trades":
            return None if conn.principal.delay else trades_room(asset)
        assert interval is not None
        return candles_room(asset, interval, conn.principal.delay) if interval in INTERVALS else None

    async def rejoin(self, conn: Connection) -> None:
        """Recovery: join the restored trade and candle rooms."""
        for name in sorted(conn.markets):
            room = self._room(conn, name)
            if room is None:
                conn.markets.discard(name)
            else:
                await self.market.ready(room_market(name)[1])  # type: ignore[index]
                await self.sio.enter_room(conn.sid, room)

    async def entitle(self, conn: Connection, principal: Principal) -> None:
        """A refreshed token: leave the trade and candle rooms it no longer allows."""
        for name in sorted(conn.markets):
            found = room_market(name)
            if found is not None and not principal.may_see(found[1]):
                _, asset, interval = found
                conn.markets.discard(name)
                room = trades_room(asset) if interval is None else candles_room(asset, interval, conn.principal.delay)
                await self.sio.leave_room(conn.sid, room)

def _history(payload: dict[str, Any], most: int, expected: str) -> int:
    count = payload.get("history", 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= most:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"history is an integer from 0 to {most}; {expected}")
    return count


def _interval(payload: dict[str, Any]) -> str:
    interval = payload.get("interval")
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"interval is one of {', '.join(INTERVALS)}")
    return interval
