"""Ingest: from the price source, through validation, to this pod's clients.

Bad messages are dropped and counted by outcome, and logged with one line per
outcome: the log's repeat filter (`realtime.logs`) writes it at most once per
window with the number held back, so a broken upstream cannot flood the logs.
Nothing a message contains stops the loop.

An accepted tick goes to the real-time room at once and into every delayed
tier's history (`tiers`), whose timer sends it when it comes of age. Every
tier room's tick passes its rate tiers (`send.rates`): at once to the rooms
whose interval has passed, later to the others, and under overload to the
tier room itself at the pod's cap. Status changes (`status`) go to the
asset's rooms of every tier and rate before the tick that caused them.

Book messages (`{"type": "book", ...}`) share the channel and go to the
books (`realtime.books`); a quote tick never holds the string `"book"`, so
it pays one substring test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any, Protocol

import orjson

from realtime.feed.prices import PriceBook, TickRejected
from realtime.feed.restarts import LocalRestarts, Restarts
from realtime.feed.sources import PriceSource
from realtime.metrics import Metrics
from realtime.protocol import PRICE_STATUS, PriceStatus, PriceUpdate, TickOutcome
from realtime.rooms import is_delayed, tier_room
from realtime.send.fanout import Fanout, deliver
from realtime.send.overload import FeedLag
from realtime.send.rates import RateTiers
from realtime.waits import together

logger = logging.getLogger(__name__)

# What every book (trade) message holds and no quote tick does (asset names are upper case).
BOOK_MARK = b'"book"'
TRADE_MARK = b'"trade"'


def typed_message(raw: bytes | str, kind: str) -> dict[str, Any] | None:
    """The feed message `{"type": kind, ...}`, decoded; None for any other (not JSON, not an object, another type)."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) and message.get("type") == kind else None


class BookFeed(Protocol):
    async def accept(self, raw: bytes | str) -> bool:
        """Take a book message (True), or leave it to the quote path (False)."""
        ...


class TradeFeed(BookFeed, Protocol):
    def quote(self, update: PriceUpdate) -> None:
        """A quote tick went out (an asset without trades builds its candles from the mid)."""
        ...


# Seconds of ticks handled before the loop gets a turn: a backlog read in one go would otherwise hold the
# loop (private events, acks, HTTP wait behind it) and hide from the overload's lag (realtime.send.overload).
TURN = 0.01

DROPPED = {outcome: f"feed: dropped {outcome.value} tick: %s" for outcome in TickOutcome}


class Ingest:
    def __init__(self, source: PriceSource, book: PriceBook, fanout: Fanout, metrics: Metrics, rates: RateTiers,
                 restarts: Restarts | None = None, books: BookFeed | None = None,
                 trades: TradeFeed | None = None, feed_lag: FeedLag | None = None) -> None:
        self.source = source
        self.book = book
        self.fanout = fanout
        self.metrics = metrics
        self.counts: Counter[TickOutcome] = Counter()
        self.delays = [0, *book.tiers.tiers]  # the real-time room and every delayed tier's
        self.restarts = restarts or LocalRestarts()
        self.rates = rates
        self.feed_lag = feed_lag or FeedLag()  # how far behind the feed ticks are read (overload's second signal)
        self.realtime_rooms = {name: tier_room(name, 0) for name in book.catalog.names}
        self.books = books
        self.trades = trades

    async def run(self) -> None:
        await self.restarts.load(self.book)
        books, trades, feed_lag = self.books, self.trades, self.feed_lag
        # A cancel while a tick is sent must still close the source and its Redis connection.
        async with contextlib.aclosing(self.source.messages()) as messages:
            turn = time.perf_counter()
            async for raw in messages:
                if time.perf_counter() - turn > TURN:
                    await asyncio.sleep(0)
                    turn = time.perf_counter()
                if trades is not None and (TRADE_MARK in raw if isinstance(raw, bytes) else TRADE_MARK.decode() in raw):
                    if await trades.accept(raw):
                        continue
                if books is not None and (BOOK_MARK in raw if isinstance(raw, bytes) else BOOK_MARK.decode() in raw):
                    if await books.accept(raw):
                        continue
                try:
                    verdict = self.book.accept_all(raw)
                except TickRejected as rejected:
                    self._drop(rejected)
                    continue
                if verdict.band_dropped:
                    self.counts[TickOutcome.BAND] += verdict.band_dropped
                if verdict.restart is not None:
                    self.restarts.save(*verdict.restart)
                if self.book.statuses.changes:
                    await self.send_statuses(self.book.statuses.drain())
                for update in verdict.updates:
                    self.counts[TickOutcome.OK] += 1
                    feed_lag.read(update["ts"])
                    self.book.tiers.add(update)
                    await self.send(update)
                    if trades is not None:
                        trades.quote(update)

    async def send(self, update: PriceUpdate, room: str | None = None) -> int:
        """Fan one tick of a tier room (the real-time one by default) out through its rate tiers; never raises."""
        base = room or self.realtime_rooms[update["asset"]]
        recipients = 0
        for target in self.rates.offer(update, base, asyncio.get_running_loop().time()):
            recipients += await self.send_room(update, target)
        return recipients

    async def send_room(self, update: PriceUpdate, room: str) -> int:
        """Fan one tick out to one room now; never raises.

        Only real-time rooms are measured: a delayed tick's age is its delay.
        """
        try:
            if is_delayed(room):
                return await self.fanout.send_price(update, room)
            started = time.perf_counter()
            recipients = await self.fanout.send_price(update, room)
            self.metrics.tick_sent(update, recipients, time.perf_counter() - started)
            return recipients
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("fan-out of %s failed", update["asset"])
            return 0

    async def send_statuses(self, changes: list[PriceStatus]) -> None:
        """`price:status` to the asset's room in every tier."""
        for change in changes:
            logger.info("feed: %s is %s", change["asset"], change["status"])
            for delay in self.delays:
                base = tier_room(change["asset"], delay)
                for room in (base, *self.rates.rooms(base)):
                    await deliver(self.fanout, room, PRICE_STATUS, change, logger, "feed")

    async def watch(self) -> None:
        """The background work besides the feed: staleness sweeps and the delayed tiers' timer."""
        await together(self.book.statuses.watch(self.send_statuses), self.book.tiers.run(self.send),
                       self.rates.run(self.send_room))

    def _drop(self, rejected: TickRejected) -> None:
        self.counts[rejected.outcome] += 1
        # One message template per outcome, so each outcome has its own line in the repeat filter.
        logger.warning(DROPPED[rejected.outcome], rejected.reason)
