"""Every catalog asset's order book on this pod: feed messages in, conflated room updates out.

The resync state machine, per asset: a book is `live` while each update's
`prevSeq` is its `seq`. An update that does not follow (or any update before
the first snapshot) is dropped and the book stops: its rooms get
`book:status` `resyncing`, no update goes out, and the feed is asked for a
snapshot (`ask`, again at most once per `RETRY` while none comes). The
snapshot replaces the book, the rooms get `live`, and their next update
carries how their view changed across the gap, so clients stay exact without
doing anything. Every decision depends only on the feed's messages: pods
that heard the same feed hold the same book at a given `seq`.

Conflation: a change reaches the rooms at once when the asset's last update
went out at least `interval` ago, else when it is due; each room gets one
framed `book:update` per send (`Room.advance`), through the fan-out's
frame-once broadcast. Nothing runs for a book whose rooms are empty here.

Rates (SPEC §11): a connection granted `maxRate` r below one update per
`interval` holds its books in rate rooms `book:<A>:<depth>~<r>`, with their
own views and their own cadence of 1/r s: the same conflation, so an update
still holds every level changed since its `prevSeq`, framed once per room.
`move` carries a subscription from one rate to another without a gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from realtime.books.book import OrderBook
from realtime.books.messages import BookMessage, BookOutcome, BookRefused, Prices, parse
from realtime.books.rooms import Room
from realtime.catalog import Catalog
from realtime.feed.ingest import typed_message
from realtime.protocol import (
    BOOK_STATUS,
    BOOK_UPDATE,
    FEED_BOOK,
    BookStatus,
    BookUpdate,
    BookView,
)
from realtime.rooms import book_room, rate_room
from realtime.send.fanout import Fanout, deliver
from realtime.waits import wait_set

logger = logging.getLogger(__name__)

# Seconds between two snapshot requests for one asset while none comes.
RETRY = 1.0
LIVE, RESYNCING = "live", "resyncing"
DROPPED = {outcome: f"books: dropped {outcome.value} message: %s" for outcome in BookOutcome}
# A book room's cadence: a rate below one update per interval, or None (every interval).
Rate = float | None


@dataclass(slots=True)
class Market:
    """One asset's book, its rooms on this pod and its resync state."""

    asset: str
    book: OrderBook
    rooms: dict[Rate, dict[int, str]]  # cadence -> depth -> room name (None: the book rooms themselves)
    live: bool = False
    views: dict[tuple[int, Rate], Room] = field(default_factory=dict)  # what each room was last sent
    touched: set[int] = field(default_factory=set)  # levels changed since the last send (bids negative)
    sent_at: dict[Rate, float] = field(default_factory=dict)  # cadence -> loop time of its last send
    asked_at: float = float("-inf")  # loop time of the last snapshot request
    asked: bool = False  # a snapshot was asked for since the book was last live


class Books:
    def __init__(self, catalog: Catalog, *, depths: list[int], interval_ms: int, fanout: Fanout,
                 room_size: Callable[[str], int], ask: Callable[[str], None]) -> None:
        self.catalog = catalog
        self.depths = depths
        self.interval = interval_ms / 1000
        self.fanout = fanout
        self.room_size = room_size
        self.ask = ask
        self.markets = {asset.name: Market(asset.name, OrderBook(asset.decimals),
                                           {None: {depth: book_room(asset.name, depth) for depth in depths}})
                        for asset in catalog}
        # Counters /metrics reads (books.gauges).
        self.outcomes: Counter[BookOutcome] = Counter()
        self.resyncs: Counter[str] = Counter()  # asset -> books live again after a gap
        self.updates: Counter[tuple[str, int]] = Counter()  # (asset, depth) -> book:update sent
        self.conflated: Counter[str] = Counter()  # asset -> level changes merged into a later one
        self._prices = Prices()
        self._due: dict[tuple[str, Rate], float] = {}  # (asset, cadence) -> loop time its pending send is due
        self._wake = asyncio.Event()

    # The feed.

    async def accept(self, raw: bytes | str) -> bool:
        """Take one feed message if it is a book's (True), else leave it to the quote path (False)."""
        message = typed_message(raw, FEED_BOOK)
        if message is None:
            return False
        try:
            await self._accept(parse(message, self.catalog, self._prices))
            self.outcomes[BookOutcome.OK] += 1
        except BookRefused as refused:
            self.outcomes[refused.outcome] += 1
            # One template per outcome: the log's repeat filter bounds each.
            logger.warning(DROPPED[refused.outcome], refused.reason)
        return True

    async def _accept(self, message: BookMessage) -> None:
        market = self.markets[message.asset]
        book = market.book
        if market.live and message.seq <= book.seq:
            raise BookRefused(BookOutcome.STALE, f"{message.asset}: seq {message.seq} is not above {book.seq}")
        if message.snapshot:
            book.apply(message.bids, message.asks, message.seq, message.ts, replace=True)
            market.touched.clear()
            if not market.live:
                market.live = True
                if market.asked:
                    self.resyncs[market.asset] += 1
                    logger.info("books: %s is live again at seq %d", market.asset, book.seq)
                market.asked = False
                await self._status(market)
            await self._changed(market)
            return
        if not market.live or message.prev_seq != book.seq:
            if market.live:
                market.live = False
                logger.warning("books: %s missed an update (prevSeq %s, book at %d): resyncing",
                            market.asset, message.prev_seq, book.seq)
                await self._status(market)
            self._ask(market)
            raise BookRefused(BookOutcome.GAP, f"{message.asset}: prevSeq {message.prev_seq} does not follow "
                                               f"{book.seq or 'no snapshot'}")
        if self._watched(market):
            touched = market.touched
            before = len(touched)
            touched.update(-price - 1 for price, _ in message.bids)
            touched.update(price for price, _ in message.asks)
            merged = before + len(message.bids) + len(message.asks) - len(touched)
            if merged:
                self.conflated[market.asset] += merged
        book.apply(message.bids, message.asks, message.seq, message.ts)
        await self._changed(market)

    def _ask(self, market: Market) -> None:
        now = asyncio.get_running_loop().time()
        if now - market.asked_at >= RETRY:
            market.asked_at = now
            market.asked = True
            self.ask(market.asset)

    def wanted(self, asset: str) -> None:
        """A room of `asset` has its first member here: a book that has none asks for its snapshot now."""
        market = self.markets.get(asset)
        if market is not None and not market.live:
            self._ask(market)

    def forget(self, asset: str) -> None:
        """This pod stopped hearing `asset` (its channel let go): the book waits for a snapshot again."""
        market = self.markets.get(asset)
        if market is not None:
            market.book.clear()
            market.live = False
            market.views.clear()
            market.touched.clear()
            for rate in market.rooms:
                self._due.pop((asset, rate), None)

    # Clients.

    def rate(self, max_rate: float | None) -> Rate:
        """The cadence of a connection granted `max_rate` (SPEC §11): None when that allows an update every
        interval (the book rooms themselves), else `max_rate`: a room sends at most every max(interval, 1/r)."""
        return None if max_rate is None or 1 / max_rate <= self.interval else max_rate

    def room(self, asset: str, depth: int, rate: Rate) -> str:
        """The name of the room of `asset`'s top-`depth` view at cadence `rate`."""
        base = book_room(asset, depth)
        return base if rate is None else rate_room(base, rate)

    def view(self, asset: str, depth: int, rate: Rate = None, *, fresh: bool) -> BookView:
        """What a connection joining (or in) the room of `asset` at `depth` and `rate` holds: the room's last
        view. Called after the join (an empty cadence is forgotten).

        `fresh`: nobody on this pod is in that room, so it starts from the book as it is now.
        """
        market = self.markets[asset]
        self._cadence(market, rate)
        room = market.views.get((depth, rate))
        if room is None or fresh:
            room = market.views[depth, rate] = Room(depth)
            room.reset(market.book)
        return self._view(market, room)

    def move(self, asset: str, depth: int, was: Rate, rate: Rate, *, fresh: bool) -> BookView | None:
        """A connection holding the view of the `was` room moved (joined first) to the `rate` room: None when
        that room's next update follows what it holds, else the `book:snapshot` it needs first.

        A room nobody was in starts from the held view itself, so the connection's `prevSeq` chain goes on
        unbroken; a room with members sends its own view unless it is the same (same `seq`, same book).
        """
        market = self.markets[asset]
        self._cadence(market, rate)
        held = market.views.get((depth, was))
        room = market.views.get((depth, rate))
        if held is not None and (fresh or room is None):
            market.views[depth, rate] = held.copy()
            return None
        if room is None or fresh:
            return self.view(asset, depth, rate, fresh=True)
        if held is not None and held.seq == room.seq:
            return None
        return self._view(market, room)

    def _cadence(self, market: Market, rate: Rate) -> None:
        if rate not in market.rooms:
            market.rooms[rate] = {depth: self.room(market.asset, depth, rate) for depth in self.depths}

    def _view(self, market: Market, room: Room) -> BookView:
        bids, asks = room.view(market.book.decimals)
        return {"ok": True, "asset": market.asset, "depth": room.depth, "seq": room.seq, "bids": bids, "asks": asks,
                "ts": room.ts, "status": LIVE if market.live else RESYNCING}

    def status(self, asset: str) -> str:
        return LIVE if self.markets[asset].live else RESYNCING

    # Sending.

    def _watched(self, market: Market) -> bool:
        room_size = self.room_size
        return any(room_size(room) for rooms in market.rooms.values() for room in rooms.values())

    def _interval(self, rate: Rate) -> float:
        return self.interval if rate is None else 1 / rate

    async def _changed(self, market: Market) -> None:
        """The book moved: each cadence with members sends now if its last send is an interval old, else when
        it is; a rate cadence nobody is in any more is forgotten."""
        loop = asyncio.get_running_loop()
        watched = False
        for rate, rooms in list(market.rooms.items()):
            if (market.asset, rate) in self._due:
                watched = True
                continue
            if not any(self.room_size(room) for room in rooms.values()):
                if rate is not None:
                    del market.rooms[rate]
                    market.sent_at.pop(rate, None)
                    for depth in rooms:
                        market.views.pop((depth, rate), None)
                continue
            watched = True
            due = market.sent_at.get(rate, float("-inf")) + self._interval(rate)
            if loop.time() >= due:
                await self._send(market, rate)
            else:
                self._due[market.asset, rate] = due
                self._wake.set()
        if not watched:
            market.touched.clear()

    async def _send(self, market: Market, rate: Rate) -> None:
        market.sent_at[rate] = asyncio.get_running_loop().time()
        market.touched.clear()
        if not market.live:
            return
        book = market.book
        for depth, name in market.rooms.get(rate, {}).items():
            room = market.views.get((depth, rate))
            if room is None or not self.room_size(name):
                continue
            prev_seq = room.seq
            changes = room.advance(book)
            if changes is None:
                continue
            update: BookUpdate = {"asset": market.asset, "depth": depth, "seq": book.seq, "prevSeq": prev_seq,
                                  "bids": changes[0], "asks": changes[1], "ts": book.ts}
            self.updates[market.asset, depth] += 1
            await self._deliver(name, BOOK_UPDATE, update)

    async def _status(self, market: Market) -> None:
        status: BookStatus = {"asset": market.asset, "status": LIVE if market.live else RESYNCING}
        for rooms in list(market.rooms.values()):
            for name in rooms.values():
                if self.room_size(name):
                    await self._deliver(name, BOOK_STATUS, status)

    async def _deliver(self, room: str, event: str, data: object) -> None:
        await deliver(self.fanout, room, event, data, logger, "books")

    async def run(self) -> None:
        """Send the conflated updates as they come due, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._due:
                await self._wake.wait()
                self._wake.clear()
                continue
            now = loop.time()
            soonest = min(self._due.values())
            if soonest > now:
                await wait_set(self._wake, soonest - now)
                self._wake.clear()
                continue
            for key in [key for key, due in self._due.items() if due <= now]:
                del self._due[key]
                await self._send(self.markets[key[0]], key[1])
