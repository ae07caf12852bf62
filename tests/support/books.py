"""The tests' exchange for order books: a book changed at random, its feed messages, and its view at every seq.

`BookFeed` is a reference written apart from `realtime.books` (plain dicts,
sorted at each seq), so a client's book is checked against what the feed
said, not against the gateway's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from realtime.backplane.connections import Subscription
from realtime.waits import cancel
from tests.support.node import NodeSession
from tests.support.waiting import eventually

Rows = list[list[str]]


def text(units: int, decimals: int) -> str:
    whole, fraction = divmod(units, 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}" if decimals else str(whole)


class BookFeed:
    """One asset's book around `mid`, `levels` possible levels a side one `step` apart."""

    def __init__(self, asset: str, *, decimals: int = 4, mid: int = 950_000_000, step: int = 10_000,
                 levels: int = 50, seed: int = 7, seq: int = 1000) -> None:
        self.asset = asset
        self.decimals = decimals
        self.rng = random.Random(seed)
        self.levels = levels
        self.bid_prices = [mid - k * step for k in range(1, levels + 1)]
        self.ask_prices = [mid + k * step for k in range(1, levels + 1)]
        self.bids: dict[int, str] = {p: self._qty() for p in self.bid_prices[: levels * 3 // 4]}
        self.asks: dict[int, str] = {p: self._qty() for p in self.ask_prices[: levels * 3 // 4]}
        self.seq = seq
        self.views: dict[int, tuple[Rows, Rows]] = {}  # seq -> the whole book, best first
        self._record()

    def _qty(self) -> str:
        return f"{self.rng.randint(1, 50_000) / 1000:.3f}"

    def _record(self) -> None:
        self.views[self.seq] = (
            [[text(p, self.decimals), q] for p, q in sorted(self.bids.items(), reverse=True)],
            [[text(p, self.decimals), q] for p, q in sorted(self.asks.items())],
        )

    def view(self, seq: int, depth: int) -> tuple[Rows, Rows]:
        bids, asks = self.views[seq]
        return bids[:depth], asks[:depth]

    def snapshot(self) -> dict[str, Any]:
        bids, asks = self.views[self.seq]
        return {"type": "book", "asset": self.asset, "seq": self.seq, "snapshot": True, "bids": bids, "asks": asks}

    def snapshot_messages(self) -> list[dict[str, Any]]:
        return [self.snapshot()]

    def delta(self, changes: int = 4) -> dict[str, Any]:
        """Change `changes` levels (new ones, new quantities, deletions, mostly near the top) and say so."""
        changed: dict[str, dict[int, str]] = {"bids": {}, "asks": {}}
        for _ in range(changes):
            side = self.rng.choice(("bids", "asks"))
            book, prices = (self.bids, self.bid_prices) if side == "bids" else (self.asks, self.ask_prices)
            price = prices[min(len(prices) - 1, int(self.rng.expovariate(1 / 8)))]
            if price in book and self.rng.random() < 0.35:
                del book[price]
                changed[side][price] = "0"
            else:
                book[price] = changed[side][price] = self._qty()
        prev = self.seq
        self.seq += 1
        self._record()
        return {"type": "book", "asset": self.asset, "seq": self.seq, "prevSeq": prev,
                "bids": [[text(p, self.decimals), q] for p, q in changed["bids"].items()],
                "asks": [[text(p, self.decimals), q] for p, q in changed["asks"].items()]}

    def touch_top(self) -> dict[str, Any]:
        """A delta that surely changes every top view: the best level of each side gets a new quantity."""
        prev = self.seq
        best_bid, best_ask = max(self.bids), min(self.asks)
        self.bids[best_bid] = self.asks[best_ask] = f"{self.rng.randint(50_001, 99_999) / 1000:.3f}"
        self.seq += 1
        self._record()
        return {"type": "book", "asset": self.asset, "seq": self.seq, "prevSeq": prev,
                "bids": [[text(best_bid, self.decimals), self.bids[best_bid]]],
                "asks": [[text(best_ask, self.decimals), self.asks[best_ask]]]}

    def missed(self) -> dict[str, Any]:
        """A delta a pod never hears (the test does not publish it): the next one's prevSeq is a gap."""
        return self.delta()


def check_lines(lines: list[dict[str, Any]], feeds: dict[str, BookFeed]) -> int:
    """Every view and every book a client printed equals its feed's top-depth view at that seq, and every
    update held only levels that changed; the number of updates checked."""
    updates = 0
    for line in lines:
        if line["type"] == "view" and line["seq"] == 0:
            assert line["bids"] == line["asks"] == [], line  # before the book's first snapshot
        elif line["type"] in ("view", "book"):
            feed = feeds[line["asset"]]
            assert [line["bids"], line["asks"]] == list(feed.view(line["seq"], line["depth"])), line
        if line["type"] == "book":
            updates += 1
            for _side, _price, qty, before in line["changed"]:
                assert qty != before and (qty != "0" or before is not None), line
    return updates


def last_seqs(lines: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """The seq of each book a client holds now, from its lines."""
    seqs: dict[tuple[str, int], int] = {}
    for line in lines:
        if line["type"] in ("view", "book"):
            seqs[line["asset"], line["depth"]] = line["seq"]
    return seqs


Publish = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Exchange:
    """The tests' feed: publishes its books' messages in seq order and answers the pods' resync requests."""

    def __init__(self, publish: Publish, feeds: dict[str, BookFeed]) -> None:
        self.publish = publish
        self.feeds = feeds
        self.requests: list[str] = []  # assets the pods asked a snapshot of
        self._lock = asyncio.Lock()

    async def send(self, make: Callable[[], list[dict[str, Any]]]) -> None:
        """Publish what `make()` returns; messages are made and published under one lock, so in seq order."""
        async with self._lock:
            await self.publish(make())

    async def burst(self, batches: int, per_batch: int = 10, every: float = 0.02) -> int:
        """`batches` x `per_batch` random deltas per asset, then one that changes every top view; deltas sent."""
        for _ in range(batches):
            await self.send(lambda: [f.delta() for f in self.feeds.values() for _ in range(per_batch)])
            # Pacing the feed (a rate is the scenario), not a wait for something.
            await asyncio.sleep(every)
        await self.send(lambda: [f.touch_top() for f in self.feeds.values()])
        return batches * per_batch + 1

    @contextlib.asynccontextmanager
    async def answering(self, redis_url: str, price_channel: str) -> AsyncIterator[Exchange]:
        """While the block runs, answer `{"type": "book:resync", "asset"}` on `<channel>:control` with a snapshot."""
        subscription = Subscription("test feed control", redis_url, [f"{price_channel}:control"], timeout=2.0,
                                    retry_max=1.0)

        async def answer() -> None:
            async for message in subscription.messages():
                request = json.loads(message["data"])
                if request.get("type") == "book:resync" and request.get("asset") in self.feeds:
                    self.requests.append(request["asset"])
                    await self.send(self.feeds[request["asset"]].snapshot_messages)

        task = asyncio.create_task(answer())
        try:
            await eventually(lambda: subscription.connected, timeout=10)
            yield self
        finally:
            await cancel(task)


async def read_until(session: NodeSession, done: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 30) -> None:
    """Read `session`'s lines until `done(lines)`."""
    async def until() -> None:
        while not done(session.lines):
            line = await session.next(timeout)
            if line["type"] == "timeout":
                raise AssertionError(f"node {session.script} timed out; last lines: {session.lines[-5:]}")
    await asyncio.wait_for(until(), timeout)


def holds(final: dict[tuple[str, int], int]) -> Callable[[list[dict[str, Any]]], bool]:
    """A `read_until` condition: the client holds each of these books at exactly this seq."""
    return lambda lines: all(last_seqs(lines).get(book) == seq for book, seq in final.items())
