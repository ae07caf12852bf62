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
"""

from __future__ import annotations

from typing import Any

from realtime.books.service import Books
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

    async def subscribe(self, conn: Connection, payload: Any = None, *_: Any) -> BookView:
        asset, depth = self._request(conn, payload)
        room = book_room(asset, depth)
        fresh = False
        if room not in conn.books:
            if len(conn.books) >= self.max_books:
                raise GatewayError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.max_books} books per connection")
            fresh = self.sio.room_size(room) == 0
            await self.sio.enter_room(conn.sid, room)
            conn.books.add(room)
            self.gateway.follow(conn)
        # Read after the join: the room's next update is the one that follows this view.
        return self.books.view(asset, depth, fresh=fresh)

    async def snapshot(self, conn: Connection, payload: Any = None, *_: Any) -> BookView:
        return await self.subscribe(conn, payload)

    async def unsubscribe(self, conn: Connection, payload: Any = None, *_: Any) -> BookUnsubscribeAck:
        asset, depth = self._request(conn, payload, check_rights=False)
        room = book_room(asset, depth)
        if room in conn.books:
            conn.books.discard(room)
            await self.sio.leave_room(conn.sid, room)
            self.gateway.follow(conn)
        return {"ok": True}

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
        for room in sorted(conn.books):
            found = room_book(room)
            if found is None or found[1] not in self.depths or found[0] not in self.books.markets:
                conn.books.discard(room)
                continue
            asset, depth = found
            fresh = self.sio.room_size(room) == 0
            await self.sio.enter_room(conn.sid, room)
            # The one send path, to this connection alone: framed now, ahead of any update of the room.
            writer = self.sio.writer_of(conn.sid)
            send(self.sio, [writer] if writer is not None else [], [BOOK_SNAPSHOT,
                                                                    self.books.view(asset, depth, fresh=fresh)])

    async def entitle(self, conn: Connection, principal: Principal) -> None:
        """A refreshed token: leave the books it no longer allows."""
        for room in sorted(conn.books):
            found = room_book(room)
            if found is not None and not principal.may_see(found[0]):
                conn.books.discard(room)
                await self.sio.leave_room(conn.sid, room)


def _check_rights(principal: Principal, asset: str) -> None:
    if principal.delay:
        raise GatewayError(ErrorCode.FORBIDDEN, f"books are real-time only; this connection is delayed by "
                                                f"{principal.delay} s")
    if not principal.may_see(asset):
        raise GatewayError(ErrorCode.FORBIDDEN, f"the token does not allow {asset}")
