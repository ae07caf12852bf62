"""Binance's market streams, normalised into the feed's messages (SPEC §9); pure, no I/O.

- `bookTicker` (`{"u", "s", "b", "B", "a", "A"}`) → a quote tick `{"asset", "bid", "ask", "seq": u, "ts"}`.
- `trade` (`{"e": "trade", "s", "t", "p", "q", "T", "m"}`) and `aggTrade` (`"a"` for the id) →
  `{"type": "trade", "asset", "id", "price", "qty", "side", "ts"}`; `m` (the buyer was the maker)
  means the taker sold.
- `depthUpdate` (`{"U", "u", "pu"?, "b", "a"}`) with the REST snapshot (`{"lastUpdateId", "bids", "asks"}`)
  → book messages: the snapshot is `seq` lastUpdateId, each update `seq` u and `prevSeq` the last
  one's. `Depth` follows Binance's documented rules for a local book: buffer the stream, take the
  snapshot (again if it is older than the first buffered event), drop what it already holds, check that
  the first update straddles it, and then that each update follows the last (`pu` is the last `u` on
  the futures streams; on spot `U` is at most the last `u` + 1). Anything else is a gap: `Depth` asks for a new
  snapshot and the gateways' books resync from it.

`Symbols` maps exchange symbols to catalog assets (`--symbols BTCUSDT=BTC_USDC_PERP,...`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from realtime.catalog import Catalog
from realtime.feed.parsing import plain

# The quote currency a catalog asset's default Binance symbol is quoted in: BTC_USDC_PERP -> BTCUSDT.
DEFAULT_QUOTE = "USDT"


class FrameRefused(ValueError):
    """A frame the adapter cannot use; the message says why."""


def symbols(catalog: Catalog, spec: str | None) -> dict[str, str]:
    """Exchange symbol (upper case) -> catalog asset: `SYMBOL=ASSET,...`, or each asset's base + USDT."""
    return exchange_names(catalog, spec, DEFAULT_QUOTE, "SYMBOL")


def exchange_names(catalog: Catalog, spec: str | None, quote: str, what: str) -> dict[str, str]:
    """An exchange's names (upper case) -> catalog assets: `NAME=ASSET,...`, or each asset's base + `quote`."""
    if not spec:
        return {asset.name.split("_")[0] + quote: asset.name for asset in catalog}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        symbol, sep, name = item.strip().partition("=")
        asset = catalog.get(name.strip())
        if not sep or not symbol.strip() or asset is None:
            raise ValueError(f"{item.strip()!r} is not {what}=ASSET with an asset of the catalog")
        mapping[symbol.strip().upper()] = asset.name
    return mapping


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def quote(data: dict[str, Any], asset: str) -> dict[str, Any]:
    """A `bookTicker` event as a quote tick."""
    try:
        return {"asset": asset, "bid": str(data["b"]), "ask": str(data["a"]), "seq": int(data["u"]),
                "ts": int(data.get("E") or data.get("T") or now_ms())}
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameRefused(f"bookTicker without {exc}") from None


def trade(data: dict[str, Any], asset: str) -> dict[str, Any]:
    """A `trade` or `aggTrade` event as a feed trade."""
    try:
        trade_id = data["t"] if data.get("e") == "trade" else data["a"]
        return {"type": "trade", "asset": asset, "id": str(trade_id), "price": plain(data["p"]),
                "qty": plain(data["q"]), "side": "sell" if data["m"] else "buy", "ts": int(data["T"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameRefused(f"{data.get('e')} without {exc}") from None


@dataclass(slots=True)
class Depth:
    """One symbol's local book, kept in step with Binance's depth stream and REST snapshots."""

    asset: str
    seq: int = 0  # the last update id applied (0: no snapshot yet)
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    buffer: list[dict[str, Any]] = field(default_factory=list)  # events waiting for a snapshot
    synced: bool = False
    resyncs: int = 0

    def reset(self) -> None:
        """A new connection: wait for a snapshot again."""
        self.synced = False
        self.buffer.clear()

    def event(self, data: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Take one `depthUpdate`: (book messages to publish, whether a snapshot is needed now)."""
        if not self.synced:
            self.buffer.append(data)
            return [], len(self.buffer) == 1
        if _u(data) <= self.seq:
            return [], False  # older than what the book holds
        if not _follows(data, self.seq):
            self.synced = False
            self.resyncs += 1
            self.buffer = [data]
            return [], True
        return [self._apply(data)], False

    def snapshot(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Take a REST snapshot: (book messages, whether it was too old and another is needed)."""
        try:
            last = int(body["lastUpdateId"])
            bids, asks = body["bids"], body["asks"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FrameRefused(f"depth snapshot without {exc}") from None
        if self.buffer and last < _first_u(self.buffer[0]):
            return [], True  # older than the first buffered event: the documented answer is another one
        self.bids = {plain(p): plain(q) for p, q in bids if Decimal(q) != 0}
        self.asks = {plain(p): plain(q) for p, q in asks if Decimal(q) != 0}
        self.seq = last
        self.synced = True
        out = [self.message()]
        pending, self.buffer = [event for event in self.buffer if _u(event) > last], []
        for event in pending:
            if not _follows(event, self.seq, first=event is pending[0]):
                self.synced = False
                self.resyncs += 1
                self.buffer = [event]
                return out, True
            out.append(self._apply(event))
        return out, False

    def message(self) -> dict[str, Any]:
        """The whole local book as a snapshot message (also the answer to a gateway's resync request)."""
        return {"type": "book", "asset": self.asset, "seq": self.seq, "snapshot": True,
                "bids": sorted(([p, q] for p, q in self.bids.items()), key=lambda level: -Decimal(level[0])),
                "asks": sorted(([p, q] for p, q in self.asks.items()), key=lambda level: Decimal(level[0])),
                "ts": now_ms()}

    def _apply(self, data: dict[str, Any]) -> dict[str, Any]:
        bids = [[plain(p), plain(q)] for p, q in data.get("b", [])]
        asks = [[plain(p), plain(q)] for p, q in data.get("a", [])]
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        prev, self.seq = self.seq, _u(data)
        return {"type": "book", "asset": self.asset, "seq": self.seq, "prevSeq": prev,
                "bids": [[p, q if Decimal(q) else "0"] for p, q in bids],
                "asks": [[p, q if Decimal(q) else "0"] for p, q in asks], "ts": int(data.get("E") or now_ms())}


def _u(data: dict[str, Any]) -> int:
    try:
        return int(data["u"])
    except (KeyError, TypeError, ValueError):
        raise FrameRefused("depthUpdate without u") from None


def _first_u(data: dict[str, Any]) -> int:
    try:
        return int(data["U"])
    except (KeyError, TypeError, ValueError):
        raise FrameRefused("depthUpdate without U") from None


def _follows(data: dict[str, Any], last: int, *, first: bool = False) -> bool:
    """Whether an update continues a book at update id `last` (Binance's rules, spot and futures)."""
    if first:  # the first after a snapshot straddles it
        return _first_u(data) <= last + 1 and _u(data) >= last
    if "pu" in data:
        return int(data["pu"]) == last
    return _first_u(data) <= last + 1  # spot: U > last + 1 means events were missed
