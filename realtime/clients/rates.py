"""How fast each connection is fed (SPEC §11): grants, the rooms they put a subscription in, `price:rate`.

A subscription granted `maxRate` r sits in the rate room of its tier room
(`asset:BTC~2`, see `realtime.send.rates`) instead of the tier room itself;
an ungranted one (every tick) in the tier room. The grant is the least of
the request, the token's `maxRate` claim and `REALTIME_MAX_RATE`; the latest
request for an asset wins. Recovery keeps the grants: a session records
each subscription with its rate (`events.sessions.subscription`).

Under overload the pod caps every asset's rate (`realtime.send.overload`);
the connections that cap lowers are told with a `price:rate` notice, one
frame for all of them, and told again when it no longer does.

Book updates follow the grants too: `rerate` tells `clients.books` after
each change, and it moves the connection's books to the rooms of their new
rate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from realtime.clients.connection import Connection
from realtime.clients.requests import MAX_ASSETS_PER_REQUEST, asset_names, grant_rate, parse_rate
from realtime.config import Settings
from realtime.engine.server import SocketServer
from realtime.events.recovery import Recovery
from realtime.events.sessions import subscription
from realtime.principal import Principal
from realtime.protocol import PRICE_RATE, ErrorCode, GatewayError, RateAck, RateNotice
from realtime.rooms import rate_room, tier_room
from realtime.send.delivery import send
from realtime.send.rates import RateTiers


class Rates:
    """The rate side of the client handlers: grants, rooms, `price:rate`, overload notices."""

    def __init__(self, sio: SocketServer, settings: Settings, tiers: RateTiers, recovery: Recovery,
                 connections: Mapping[str, Connection]) -> None:
        self.sio = sio
        self.cap = settings.max_rate
        self.tiers = tiers
        self.recovery = recovery
        self.connections = connections
        self._noticed: set[str] = set()  # sids told that the overload cap limits them
        # What follows a connection's grants (its books' rate rooms, `clients.books`): run after each change.
        self.rerates: list[Callable[[Connection], Awaitable[None]]] = []

    def grant(self, principal: Principal, requested: float | None) -> float | None:
        """The rate a request gets: the least of it, the token's claim and REALTIME_MAX_RATE (None: every tick)."""
        return grant_rate(requested, principal.max_rate, self.cap)

    def set(self, conn: Connection, asset: str, rate: float | None) -> None:
        if rate is None:
            conn.rates.pop(asset, None)
        else:
            conn.rates[asset] = rate

    def room(self, conn: Connection, asset: str) -> str:
        """The room `conn`'s subscription of `asset` sits in."""
        base = tier_room(asset, conn.principal.delay)
        rate = conn.rates.get(asset)
        return base if rate is None else rate_room(base, rate)

    async def join(self, conn: Connection, asset: str) -> None:
        await self.sio.enter_room(conn.sid, self.room(conn, asset))
        rate = conn.rates.get(asset)
        if rate is not None:  # after the join: a tier whose room is empty is forgotten
            self.tiers.room(tier_room(asset, conn.principal.delay), rate)

    async def change(self, conn: Connection, asset: str, rate: float | None) -> None:
        """Move a subscription to the room of `rate`; what it was sent before stays older than what follows."""
        if conn.rates.get(asset) == rate:
            return
        await self.sio.leave_room(conn.sid, self.room(conn, asset))
        self.set(conn, asset, rate)
        await self.join(conn, asset)

    def follow(self, conn: Connection) -> None:
        """Record the subscriptions, with their rates, and the books, trades, candles, channels and states in the
        connection's recoverable session."""
        self.recovery.follow(conn.sid, [*(subscription(a, conn.rates.get(a)) for a in sorted(conn.subscriptions)),
                                        *conn.rooms()])

    async def change_all(self, conn: Connection, payload: Any = None, *_: Any) -> RateAck:
        """`price:rate` `{"maxRate": N | null, "assets"?: [...]}`: a new grant for those subscriptions (or all)."""
        if not isinstance(payload, dict) or "maxRate" not in payload or set(payload) - {"maxRate", "assets"}:
            raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"maxRate": N | null, "assets": [...] (optional)}')
        rate = self.grant(conn.principal, parse_rate(payload["maxRate"]))
        if "assets" in payload:
            wanted = {name.upper() for name in asset_names(payload["assets"], MAX_ASSETS_PER_REQUEST)}
            assets = sorted(a for a in conn.subscriptions if a in wanted)
        else:
            assets = sorted(conn.subscriptions)
        for asset in assets:
            await self.change(conn, asset, rate)
        await self.rerate(conn)
        self.follow(conn)
        return {"ok": True, "maxRate": rate, "assets": assets}

    async def rerate(self, conn: Connection) -> None:
        """The connection's grants (or its token) may have changed: what follows them moves now."""
        for rerate in self.rerates:
            await rerate(conn)

    def overload(self, ceiling: float | None) -> None:
        """The pod's overload cap changed: tell the connections it lowers now, and those it no longer does."""
        limited: list[str] = []
        if ceiling is not None:
            for sid, conn in self.connections.items():
                if any(conn.rates.get(a, ceiling + 1) > ceiling for a in conn.subscriptions):
                    limited.append(sid)
        freed = self._noticed.difference(limited)
        self._noticed = set(limited)
        self._notify(limited, {"maxRate": ceiling, "overload": True})
        self._notify(freed, {"maxRate": None, "overload": ceiling is not None})

    def _notify(self, sids: Any, notice: RateNotice) -> None:
        writers = [writer for sid in sids if (writer := self.sio.writer_of(sid)) is not None]
        send(self.sio, writers, [PRICE_RATE, notice])
