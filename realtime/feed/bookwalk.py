"""A plausible order book around a moving quote, for the embedded feed, `realtime feed` and the benchmark.

Each side is a ladder of `levels` price levels one `step` apart from the
touch (the quote's bid and ask, on the step grid). When the quote moves,
levels that fall off the ladder are deleted and new ones enter; besides,
`changes` random levels get a new quantity, and one in ten of those is
deleted (a level that leaves the top of the book until the ladder brings it
back). Messages are the feed's (`{"type": "book", ...}`), numbered from the
wall clock in microseconds like the quote simulator, so a restarted
simulator keeps numbering above what it published before.
"""

from __future__ import annotations

import random
import time
from typing import Any

from realtime.feed.parsing import price_text
from realtime.protocol import FEED_BOOK

DELETE = 0.1  # share of random changes that delete their level


class BookWalk:
    def __init__(self, asset: str, decimals: int, *, levels: int = 20, seed: int | None = None) -> None:
        self.asset = asset
        self.decimals = decimals
        self.levels = levels
        self.rng = random.Random(seed)
        self.seq = time.time_ns() // 1000
        self.step = 0
        self.bids: dict[int, str] = {}
        self.asks: dict[int, str] = {}

    def snapshot(self) -> dict[str, Any]:
        """The whole book now, at the current seq (the answer to a resync request)."""
        return {"type": FEED_BOOK, "asset": self.asset, "seq": self.seq, "snapshot": True,
                "bids": self._rows(sorted(self.bids.items(), reverse=True)),
                "asks": self._rows(sorted(self.asks.items())), "ts": time.time_ns() // 1_000_000}

    def move(self, bid: int, ask: int, changes: int = 4) -> dict[str, Any]:
        """Follow the quote (`bid`, `ask` in units), change `changes` random levels; the delta message."""
        if not self.step:
            self.step = _round_step((bid + ask) // 20_000)  # about a basis point of the mid
        step = self.step
        top_bid, top_ask = bid - bid % step, ask + (-ask % step)
        changed_bids = self._follow(self.bids, {top_bid - k * step for k in range(self.levels)})
        changed_asks = self._follow(self.asks, {top_ask + k * step for k in range(self.levels)})
        for _ in range(changes):
            side, changed = (self.bids, changed_bids) if self.rng.random() < 0.5 else (self.asks, changed_asks)
            if not side:
                continue
            price = self.rng.choice(list(side))
            if self.rng.random() < DELETE:
                del side[price]
                changed[price] = "0"
            else:
                side[price] = changed[price] = self._quantity()
        prev = self.seq
        self.seq += 1
        return {"type": FEED_BOOK, "asset": self.asset, "seq": self.seq, "prevSeq": prev,
                "bids": self._rows(sorted(changed_bids.items(), reverse=True)),
                "asks": self._rows(sorted(changed_asks.items())), "ts": time.time_ns() // 1_000_000}

    def _follow(self, side: dict[int, str], ladder: set[int]) -> dict[int, str]:
        changed: dict[int, str] = {}
        for price in [price for price in side if price not in ladder]:
            del side[price]
            changed[price] = "0"
        for price in ladder:
            if price not in side:
                side[price] = changed[price] = self._quantity()
        return changed

    def _quantity(self) -> str:
        return f"{self.rng.uniform(0.001, 5.0):.3f}"

    def _rows(self, levels: list[tuple[int, str]]) -> list[list[str]]:
        return [[price_text(price, self.decimals), quantity] for price, quantity in levels]


def _round_step(units: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `units` (at least 1): a tick size people use."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power >= units:
                return factor * power
        power *= 10
