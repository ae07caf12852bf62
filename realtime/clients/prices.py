"""Price events of a connection: `price:subscribe` and `price:unsubscribe` (SPEC §2).

A connection subscribes to catalog assets it may see (the token's `assets`
claim), at most `REALTIME_MAX_SUBSCRIPTIONS`, each at the rate granted
(`clients.rates`: a `maxRate` asked, within the claim and the pod's cap). The
ack carries each asset's latest price and status, read after the last join, so
no tick that arrived meanwhile is newer than its baseline. Every asset the
request names but the connection does not get is in `rejected` with its code.
"""

from __future__ import annotations

from typing import Any

from realtime.clients.connection import Connection
from realtime.clients.handlers import Gateway
from realtime.clients.requests import MAX_ASSETS_PER_REQUEST, asset_names, subscribe_request
from realtime.protocol import (
    PRICE_SUBSCRIBE,
    PRICE_UNSUBSCRIBE,
    ErrorCode,
    PriceUpdate,
    Rejection,
    SubscribeAck,
    UnsubscribeAck,
)


class PriceHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sio = gateway.sio
        self.rates = gateway.rates
        self.catalog = gateway.catalog
        self.book = gateway.book
        self.max_subscriptions = gateway.settings.max_subscriptions
        self.instance_id = gateway.instance_id
        gateway.handle(PRICE_SUBSCRIBE, self.subscribe)
        gateway.handle(PRICE_UNSUBSCRIBE, self.unsubscribe)

    async def subscribe(self, conn: Connection, payload: Any = None, *_: Any) -> SubscribeAck:
        names, requested = subscribe_request(payload, MAX_ASSETS_PER_REQUEST)
        rate = self.rates.grant(conn.principal, requested)
        subscribed: list[str] = []
        rejected: list[Rejection] = []
        for name in names:
            asset = self.catalog.get(name)
            if asset is None:
                rejected.append({"asset": name, "code": ErrorCode.UNKNOWN_ASSET.value})
                continue
            if not conn.principal.may_see(asset.name):
                rejected.append({"asset": asset.name, "code": ErrorCode.FORBIDDEN.value})
                continue
            if asset.name not in conn.subscriptions:
                if len(conn.subscriptions) >= self.max_subscriptions:
                    rejected.append({"asset": asset.name, "code": ErrorCode.TOO_MANY_SUBSCRIPTIONS.value})
                    continue
                conn.subscriptions.add(asset.name)
                self.rates.set(conn, asset.name, rate)
                await self.rates.join(conn, asset.name)
            else:
                await self.rates.change(conn, asset.name, rate)
            if asset.name not in subscribed:
                subscribed.append(asset.name)
        await self.rates.rerate(conn)  # the books of these assets follow their new grants
        # Read the snapshot after the last await: a tick that arrived while we
        # joined rooms is then never newer than the ack's baseline.
        delay = conn.principal.delay
        prices: list[PriceUpdate] = [p for p in (self.book.latest(a, delay) for a in subscribed) if p is not None]
        self.gateway.follow(conn)
        return {"ok": True, "subscribed": subscribed, "rejected": rejected, "prices": prices,
                "statuses": [self.book.status(a) for a in subscribed], "instance": self.instance_id,
                "maxRate": rate}

    async def unsubscribe(self, conn: Connection, payload: Any = None, *_: Any) -> UnsubscribeAck:
        names = asset_names(payload, MAX_ASSETS_PER_REQUEST)
        unsubscribed: list[str] = []
        for name in names:
            asset = self.catalog.get(name)
            if asset is None or asset.name in unsubscribed:
                continue
            if asset.name in conn.subscriptions:
                conn.subscriptions.discard(asset.name)
                await self.sio.leave_room(conn.sid, self.rates.room(conn, asset.name))
                conn.rates.pop(asset.name, None)
            unsubscribed.append(asset.name)
        await self.rates.rerate(conn)  # their books fall back to the token's rate
        self.gateway.follow(conn)
        return {"ok": True, "unsubscribed": unsubscribed}
