"""The feed's book messages (SPEC §9), validated into `BookMessage`.

`{"type": "book", "asset", "seq", "prevSeq", "bids": [[price, qty], ...], "asks": [...], "ts"}`
carries changed levels; `"snapshot": true` (no `prevSeq`) the whole book.
Prices and quantities are decimal strings (prices may also be integers in
the smallest unit, as on the quote path); a quantity of zero removes the
level. Anything else raises `BookRefused` with an outcome the books count.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from realtime.books.book import Level
from realtime.catalog import Catalog
from realtime.feed import parsing
from realtime.feed.parsing import NumberRefused

QUANTITY = re.compile(r"\d{1,20}(?:\.\d{1,18})?")
# Levels one message may carry per side (a full exchange snapshot is 1 000 to 5 000).
MAX_LEVELS = 10_000
# Price strings remembered per decimals: a book's levels come back again and again, and converting a
# decimal string exactly is most of the cost of a message (the cache starts again when full).
PRICE_CACHE = 65_536


class BookOutcome(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    STALE = "stale"  # seq not above the book's: a duplicate or a replay
    GAP = "gap"  # prevSeq is not the book's seq (or no snapshot yet): dropped, the book resyncs


class BookRefused(Exception):
    def __init__(self, outcome: BookOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BookMessage:
    asset: str
    seq: int
    prev_seq: int | None  # None: a snapshot
    bids: list[Level]
    asks: list[Level]
    ts: int

    @property
    def snapshot(self) -> bool:
        return self.prev_seq is None


class Prices:
    """Exact price conversions (`feed.parsing.price`) of strings seen before, per decimals."""

    def __init__(self) -> None:
        self._known: dict[int, dict[str, int]] = {}

    def units(self, value: Any, side: str, decimals: int) -> int:
        known = self._known.setdefault(decimals, {})
        if isinstance(value, str):
            units = known.get(value)
            if units is not None:
                return units
        units = parsing.price(value, f"{side} price", decimals)
        if isinstance(value, str):
            if len(known) >= PRICE_CACHE:
                known.clear()
            known[value] = units
        return units


def parse(message: dict[str, Any], catalog: Catalog, prices: Prices | None = None) -> BookMessage:
    """Validate a decoded feed message of type `book`."""
    name = message.get("asset")
    if not isinstance(name, str):
        raise BookRefused(BookOutcome.MALFORMED, "asset must be a string")
    asset = catalog.get(name)
    if asset is None:
        raise BookRefused(BookOutcome.UNKNOWN, f"unknown asset {name[:64]!r}")
    now_ms = time.time_ns() // 1_000_000
    try:
        seq = parsing.sequence(message.get("seq"))
        snapshot = message.get("snapshot", False)
        if not isinstance(snapshot, bool):
            raise NumberRefused("snapshot must be true or false")
        prev_seq = None if snapshot else parsing.sequence(message.get("prevSeq"))
        if seq is None or (prev_seq is None and not snapshot):
            raise NumberRefused("seq and (unless a snapshot) prevSeq are required")
        ts = parsing.timestamp(message.get("ts"), now_ms)
        prices = prices or Prices()
        bids = _levels(message.get("bids", []), "bids", asset.decimals, prices)
        asks = _levels(message.get("asks", []), "asks", asset.decimals, prices)
    except NumberRefused as refused:
        raise BookRefused(BookOutcome.MALFORMED, f"{asset.name}: {refused}") from None
    return BookMessage(asset.name, seq, prev_seq, bids, asks, ts if ts is not None else now_ms)


def _levels(value: Any, side: str, decimals: int, prices: Prices) -> list[Level]:
    if not isinstance(value, list):
        raise NumberRefused(f"{side} must be a list of [price, quantity]")
    if len(value) > MAX_LEVELS:
        raise NumberRefused(f"{side}: at most {MAX_LEVELS} levels per message")
    levels: list[Level] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise NumberRefused(f"{side} must be a list of [price, quantity]")
        price, quantity = item
        if not isinstance(quantity, str) or QUANTITY.fullmatch(quantity) is None:
            raise NumberRefused(f"{side}: quantity {str(quantity)[:32]!r} is not a non-negative decimal string")
        levels.append((prices.units(price, side, decimals), quantity))
    return levels
