"""Book events of a connection: `book:subscribe`, `book:snapshot`, `book:unsubscribe` (SPEC §9).

A connection names an asset and a depth (one of `REALTIME_BOOK_DEPTHS`) and
joins the room `book:<A>:<depth>`; its ack is the view that room was last
sent (`Books.view`), so the room's next `book:update` applies to it.
`book:snapshot` answers the same (joining if need be): what a client that
saw a `prevSeq` gap asks for. The token's `assets` claim applies, and a
delayed connection gets `FORBIDDEN`: books are real-time only.

On recovery, `rejoin` joins the restored book rooms and sends each one's
`book:snapshot` event right after the join (`send.delivery.send`, to this
connection alone), before any update can reach it.

Rates (SPEC §11): a connection's book of an asset follows the grant of its
price subscription of that asset (`price:subscribe`'s `maxRate`,
`price:rate`), or without one the token's claim or `REALTIME_MAX_RATE`;
below one update per `REALTIME_BOOK_INTERVAL` it sits in a rate room
(`Books.rate`). When a grant changes, `rerate` moves the book: to a room
nobody was in, the view it holds carries over (no message); to a room whose
members hold another view, a `book:snapshot` event of that view comes first.
Sessions record the book rooms themselves; the rate follows on recovery.
"""

from __future__ import annotations

from typing import Any

from realtime.books.service import Books, Rate
from realtime.clients.connection import Connection
from realtime.clients.handlers import Gateway
from realtime.engine.server import SocketServer
from realtime.principal import Principal
from realtime.protocol import (
    BOOK_SNAPSHOT,
    BOOK_SUBSCRIBE,
    BOOK_UNSUBSCRIBE,
    BookUnsubscribeAck,
    BookView,
    ErrorCode,
    GatewayError,
)
from realtime.rooms import book_room, room_book
from realtime.send.delivery import send


class BookHandlers:
    def __init__(self, gateway: Gateway, books: Books) -> None:
        self.gateway = gateway
        self.sio: SocketServer = gateway.sio
        self.books = books
        self.depths = books.depths
        self.max_books = gateway.settings.max_subscriptions
        gateway.handle(BOOK_SUBSCRIBE, self.subscribe)
        gateway.handle(BOOK_SNAPSHOT, self.snapshot)
        gateway.handle(BOOK_UNSUBSCRIBE, self.unsubscribe)
        gateway.extend(rejoin=self.rejoin, entitle=self.entitle)
        gateway.rates.rerates.append(self.rerate)

    async def subscribe(self, conn: Connection, payload: Any = None, *_: Any) -> BookView:
        asset, depth = self._request(conn, payload)
        base = book_room(asset, depth)
        if base not in conn.books and len(conn.books) >= self.max_books:
            raise GatewayError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.max_books} books per connection")
        rate = conn.book_rates.get(base)
        fresh = False
        if base not in conn.book_rates:
            rate = self._rate(conn, asset)
            fresh = await self._join(conn, base, asset, depth, rate)
            conn.books.add(base)
            self.gateway.follow(conn)
        # Read after the join: the room's next update is the one that follows this view.
        return self.books.view(asset, depth, rate, fresh=fresh)

    async def snapshot(self, conn: Connection, payload: Any = None, *_: Any) -> BookView:
        return await self.subscribe(conn, payload)

    async def unsubscribe(self, conn: Connection, payload: Any = None, *_: Any) -> BookUnsubscribeAck:
        asset, depth = self._request(conn, payload, check_rights=False)
        base = book_room(asset, depth)
        if base in conn.books:
            await self._leave(conn, base, asset, depth)
            self.gateway.follow(conn)
        return {"ok": True}

    def _rate(self, conn: Connection, asset: str) -> Rate:
        """The cadence of `conn`'s books of `asset`: its price subscription's grant, else its token's."""
        granted = (conn.rates.get(asset) if asset in conn.subscriptions
                   else self.gateway.rates.grant(conn.principal, None))
        return self.books.rate(granted)

    async def _join(self, conn: Connection, base: str, asset: str, depth: int, rate: Rate) -> bool:
        """Join the room of the book at `rate`; whether nobody on this pod was in it."""
        room = self.books.room(asset, depth, rate)
        fresh = self.sio.room_size(room) == 0
        await self.sio.enter_room(conn.sid, room)
        conn.book_rates[base] = rate
        return fresh

    async def _leave(self, conn: Connection, base: str, asset: str, depth: int) -> None:
        conn.books.discard(base)
        if base in conn.book_rates:
            await self.sio.leave_room(conn.sid, self.books.room(asset, depth, conn.book_rates.pop(base)))

    async def rerate(self, conn: Connection) -> None:
        """The connection's grants may have changed: move each book whose rate did, without a gap."""
        for base, was in sorted(conn.book_rates.items()):
            found = room_book(base)
            assert found is not None
            asset, depth = found
            rate = self._rate(conn, asset)
            if rate == was:
                continue
            await self.sio.leave_room(conn.sid, self.books.room(asset, depth, was))
            fresh = await self._join(conn, base, asset, depth, rate)
            view = self.books.move(asset, depth, was, rate, fresh=fresh)
            if view is not None:
                self._snapshot(conn, view)

    def _snapshot(self, conn: Connection, view: BookView) -> None:
        """`book:snapshot` to this connection alone, through the one send path: framed now, ahead of any
        update of the room it joined."""
        writer = self.sio.writer_of(conn.sid)
        send(self.sio, [writer] if writer is not None else [], [BOOK_SNAPSHOT, view])

    def _request(self, conn: Connection, payload: Any, *, check_rights: bool = True) -> tuple[str, int]:
        """The (asset, depth) a payload names, in catalog spelling; raises the ack's error."""
        if not isinstance(payload, dict):
            raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"asset": "<name>", "depth": <depth>}')
        name, depth = payload.get("asset"), payload.get("depth")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise GatewayError(ErrorCode.BAD_REQUEST, "asset is a non-empty string of at most 64 characters")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth not in self.depths:
            raise GatewayError(ErrorCode.BAD_REQUEST, f"depth is one of {', '.join(map(str, self.depths))}")
        asset = self.gateway.catalog.get(name)
        if asset is None:
            raise GatewayError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {name!r}")
        if check_rights:
            _check_rights(conn.principal, asset.name)
        return asset.name, depth

    async def rejoin(self, conn: Connection) -> None:
        """Recovery: join the restored book rooms, each followed at once by its `book:snapshot`."""
        for base in sorted(conn.books):
            found = room_book(base)
            if found is None or found[1] not in self.depths or found[0] not in self.books.markets:
                conn.books.discard(base)
                continue
            if base in conn.book_rates:
                continue  # joined already: the client asked for it again before the recovery got here
            asset, depth = found
            rate = self._rate(conn, asset)
            fresh = await self._join(conn, base, asset, depth, rate)
            self._snapshot(conn, self.books.view(asset, depth, rate, fresh=fresh))

    async def entitle(self, conn: Connection, principal: Principal) -> None:
        """A refreshed token: leave the books it no longer allows."""
        for base in sorted(conn.books):
            found = room_book(base)
            if found is not None and not principal.may_see(found[0]):
                await self._leave(conn, base, *found)


def _check_rights(principal: Principal, asset: str) -> None:
    if principal.delay:
        raise GatewayError(ErrorCode.FORBIDDEN, f"books are real-time only; this connection is delayed by "
                                                f"{principal.delay} s")
    if not principal.may_see(asset):
        raise GatewayError(ErrorCode.FORBIDDEN, f"the token does not allow {asset}")
