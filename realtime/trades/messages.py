"""The feed's trade messages (SPEC §9), validated into the `trade` event (`protocol.TradeEvent`).

`{"type": "trade", "asset", "id", "price": "95850.1", "qty": "0.010", "side": "buy" | "sell", "ts"}`:
prices and quantities are decimal strings, kept as sent (the tape shows
them) and read exactly with `Decimal` where candles add them up. Anything
else raises `TradeRefused` with the outcome the metrics count.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from enum import StrEnum
from typing import Any

from realtime.catalog import Catalog
from realtime.feed import parsing
from realtime.feed.parsing import NumberRefused
from realtime.protocol import TradeEvent

DECIMAL = re.compile(r"\d{1,20}(?:\.\d{1,18})?")
MAX_ID = 64  # characters of a trade id
SIDES = ("buy", "sell")


class TradeOutcome(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    DUPLICATE = "duplicate"  # an id this pod heard among the asset's recent trades


class TradeRefused(Exception):
    def __init__(self, outcome: TradeOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def parse(message: dict[str, Any], catalog: Catalog) -> TradeEvent:
    """Validate a decoded feed message of type `trade`: the `trade` event the tape keeps and clients get."""
    name = message.get("asset")
    if not isinstance(name, str):
        raise TradeRefused(TradeOutcome.MALFORMED, "asset must be a string")
    asset = catalog.get(name)
    if asset is None:
        raise TradeRefused(TradeOutcome.UNKNOWN, f"unknown asset {name[:64]!r}")
    trade_id = message.get("id")
    if isinstance(trade_id, int) and not isinstance(trade_id, bool) and trade_id >= 0:
        trade_id = str(trade_id)
    if not isinstance(trade_id, str) or not 0 < len(trade_id) <= MAX_ID:
        raise TradeRefused(TradeOutcome.MALFORMED, f"{asset.name}: id must be a string of 1 to {MAX_ID} characters "
                                                   "or a non-negative integer")
    price, qty, side = message.get("price"), message.get("qty"), message.get("side")
    for field, value in (("price", price), ("qty", qty)):
        if not isinstance(value, str) or DECIMAL.fullmatch(value) is None:
            raise TradeRefused(TradeOutcome.MALFORMED, f"{asset.name}: {field} {str(value)[:32]!r} is not a "
                                                       "non-negative decimal string")
    assert isinstance(price, str) and isinstance(qty, str)
    if Decimal(price) <= 0 or Decimal(qty) <= 0:
        raise TradeRefused(TradeOutcome.MALFORMED, f"{asset.name}: price and qty must be above zero")
    if side not in SIDES:
        raise TradeRefused(TradeOutcome.MALFORMED, f"{asset.name}: side must be buy or sell")
    now_ms = time.time_ns() // 1_000_000
    try:
        ts = parsing.timestamp(message.get("ts"), now_ms)
    except NumberRefused as refused:
        raise TradeRefused(TradeOutcome.MALFORMED, f"{asset.name}: {refused}") from None
    return {"asset": asset.name, "id": trade_id, "price": price, "qty": qty, "side": str(side),
            "ts": ts if ts is not None else now_ms}
