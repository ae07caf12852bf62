"""What one book room (`book:<A>:<depth>`) of this pod was last sent, and the diff that comes next.

A room's members all hold the view the room was last sent (`seq`); an update
carries exactly the levels of the top-`depth` view that differ from it, with
`"0"` for a level that left the view. A connection that joins gets that same
view in its ack, so the next update (its `prevSeq` is the room's `seq`)
applies to what it holds. A room nobody is in starts again from the book as
it is (`reset`), or from the view of the room a connection moved from (`copy`).
"""

from __future__ import annotations

from realtime.books.book import Level, OrderBook, price_text

ZERO = "0"


class Room:
    __slots__ = ("asks", "bids", "depth", "seq", "ts")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.seq = 0
        self.ts = 0
        self.bids: dict[int, str] = {}
        self.asks: dict[int, str] = {}

    def reset(self, book: OrderBook) -> None:
        """Start from the book's view now (nobody holds an older one)."""
        self.bids = dict(book.bids.top(self.depth))
        self.asks = dict(book.asks.top(self.depth))
        self.seq = book.seq
        self.ts = book.ts

    def copy(self) -> Room:
        """Another room holding this room's view (a connection moved to a rate room nobody was in)."""
        room = Room(self.depth)
        room.bids, room.asks = dict(self.bids), dict(self.asks)
        room.seq, room.ts = self.seq, self.ts
        return room

    def advance(self, book: OrderBook) -> tuple[list[list[str]], list[list[str]]] | None:
        """The changed levels (bids, asks) from what was sent to the book's view now, and remember that view;
        None when the view is unchanged (the room keeps its `seq`: its members' `prevSeq` stays right)."""
        bids = book.bids.top(self.depth)
        asks = book.asks.top(self.depth)
        changed_bids = _changes(self.bids, bids, book.decimals, descending=True)
        changed_asks = _changes(self.asks, asks, book.decimals, descending=False)
        if not changed_bids and not changed_asks:
            return None
        self.bids = dict(bids)
        self.asks = dict(asks)
        self.seq = book.seq
        self.ts = book.ts
        return changed_bids, changed_asks

    def view(self, decimals: int) -> tuple[list[list[str]], list[list[str]]]:
        """The view the room was last sent, best first."""
        return (_rows(sorted(self.bids.items(), reverse=True), decimals),
                _rows(sorted(self.asks.items()), decimals))


def _changes(sent: dict[int, str], now: list[Level], decimals: int, *, descending: bool) -> list[list[str]]:
    changed: list[Level] = [(price, quantity) for price, quantity in now if sent.get(price) != quantity]
    inside = {price for price, _ in now}
    changed.extend((price, ZERO) for price in sent if price not in inside)
    changed.sort(reverse=descending)
    return _rows(changed, decimals)


def _rows(levels: list[Level], decimals: int) -> list[list[str]]:
    return [[price_text(price, decimals), quantity] for price, quantity in levels]
