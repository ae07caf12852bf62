"""One order book, exact: prices as integers in the asset's smallest unit, quantities as the feed's decimal strings.

Prices are converted with the catalog's decimals (`feed.parsing.price`: never
through a float, more decimals than the catalog allows is refused), so two
spellings of one price are one level; quantities are kept as the feed wrote
them, and one that is zero (`"0"`, `"0.000"`) deletes its level. Each side
keeps its prices sorted, so the top-`depth` view costs O(depth).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

from realtime.feed.parsing import price_text

__all__ = ["Level", "OrderBook", "Side", "is_zero", "price_text"]

Level = tuple[int, str]  # (price in units, quantity as a decimal string)


def is_zero(quantity: str) -> bool:
    return not quantity.strip("0.")


class Side:
    """Bids (best = highest) or asks (best = lowest): price -> quantity, prices kept sorted ascending."""

    __slots__ = ("descending", "levels", "prices")

    def __init__(self, descending: bool) -> None:
        self.descending = descending
        self.levels: dict[int, str] = {}
        self.prices: list[int] = []

    def set(self, price: int, quantity: str) -> None:
        """Set a level; a zero quantity removes it."""
        if is_zero(quantity):
            if self.levels.pop(price, None) is not None:
                del self.prices[bisect_left(self.prices, price)]
            return
        if price not in self.levels:
            insort(self.prices, price)
        self.levels[price] = quantity

    def replace(self, levels: Iterable[Level]) -> None:
        """Make `levels` the whole side (zero quantities skipped), sorting once: a snapshot of thousands."""
        self.levels = {price: quantity for price, quantity in dict(levels).items() if not is_zero(quantity)}
        self.prices = sorted(self.levels)

    def top(self, depth: int) -> list[Level]:
        """The best `depth` levels, best first."""
        prices = self.prices[:-depth - 1:-1] if self.descending else self.prices[:depth]
        levels = self.levels
        return [(price, levels[price]) for price in prices]

    def clear(self) -> None:
        self.levels.clear()
        self.prices.clear()

    def __len__(self) -> int:
        return len(self.prices)


class OrderBook:
    """An asset's book at `seq` (0 and empty before the first snapshot)."""

    __slots__ = ("asks", "bids", "decimals", "seq", "ts")

    def __init__(self, decimals: int) -> None:
        self.decimals = decimals
        self.bids = Side(descending=True)
        self.asks = Side(descending=False)
        self.seq = 0
        self.ts = 0

    def apply(self, bids: Iterable[Level], asks: Iterable[Level], seq: int, ts: int, *, replace: bool = False) -> None:
        """Apply changed levels (or, with `replace`, make them the whole book); the book is then at `seq`."""
        if replace:
            self.bids.replace(bids)
            self.asks.replace(asks)
        else:
            for price, quantity in bids:
                self.bids.set(price, quantity)
            for price, quantity in asks:
                self.asks.set(price, quantity)
        self.seq = seq
        self.ts = ts

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.seq = 0
        self.ts = 0
