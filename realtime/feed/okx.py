"""OKX's public channels, normalised into the feed's messages (SPEC §9); pure, no I/O.

- `tickers` (`bidPx`, `askPx`, `ts`) → a quote tick `{"asset", "bid", "ask", "ts"}`.
- `trades` (`tradeId`, `px`, `sz`, `side`, `ts`) → `{"type": "trade", ...}` (`side` is the taker's).
- `books` (`action` `snapshot` | `update`, `seqId`, `prevSeqId`, `bids`, `asks`) → book messages:
  OKX numbers its book like the gateway does, so a snapshot is `seq` seqId and an update `seq` seqId,
  `prevSeq` prevSeqId. `Sequence` checks OKX's documented rule: an update whose `prevSeqId` is not the
  last `seqId` lost a message, and the channel is subscribed again for a new snapshot. An update with
  `seqId == prevSeqId` (no change) is not published.

Instrument ids map to catalog assets like Binance's symbols: `BTC-USDT=BTC_USDC_PERP,...`, by default
each asset's base + `-USDT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from realtime.catalog import Catalog
from realtime.feed.binance import FrameRefused, exchange_names, now_ms

DEFAULT_QUOTE = "-USDT"


def instruments(catalog: Catalog, spec: str | None) -> dict[str, str]:
    """OKX instrument id (upper case) -> catalog asset: `INST=ASSET,...`, or each asset's base + -USDT."""
    return exchange_names(catalog, spec, DEFAULT_QUOTE, "INSTRUMENT")


def subscribe(op: str, channels: list[str], inst_ids: list[str]) -> dict[str, Any]:
    return {"op": op, "args": [{"channel": channel, "instId": inst} for inst in inst_ids for channel in channels]}


def quote(data: dict[str, Any], asset: str) -> dict[str, Any]:
    try:
        return {"asset": asset, "bid": str(data["bidPx"]), "ask": str(data["askPx"]), "ts": int(data["ts"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameRefused(f"tickers without {exc}") from None


def trade(data: dict[str, Any], asset: str) -> dict[str, Any]:
    try:
        side = str(data["side"])
        if side not in ("buy", "sell"):
            raise ValueError("side")
        return {"type": "trade", "asset": asset, "id": str(data["tradeId"]), "price": str(data["px"]),
                "qty": str(data["sz"]), "side": side, "ts": int(data["ts"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameRefused(f"trades without {exc}") from None


@dataclass(slots=True)
class Sequence:
    """One instrument's book sequence: whether OKX's updates still follow."""

    asset: str
    seq: int | None = None  # None: waiting for a snapshot
    resyncs: int = 0

    def reset(self) -> None:
        self.seq = None

    def book(self, action: str, data: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """One `books` push: (the book message to publish, whether to subscribe again for a snapshot)."""
        try:
            seq, prev = int(data["seqId"]), int(data["prevSeqId"])
            bids, asks = _levels(data.get("bids", [])), _levels(data.get("asks", []))
            ts = int(data.get("ts") or now_ms())
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise FrameRefused(f"books without {exc}") from None
        if action == "snapshot":
            self.seq = seq
            return {"type": "book", "asset": self.asset, "seq": seq, "snapshot": True,
                    "bids": [lvl for lvl in bids if lvl[1] != "0"], "asks": [lvl for lvl in asks if lvl[1] != "0"],
                    "ts": ts}, False
        if self.seq is None:
            return None, False  # an update before the (re)subscription's snapshot
        if prev != self.seq:
            self.seq = None
            self.resyncs += 1
            return None, True
        if seq == prev:
            return None, False  # nothing changed
        self.seq = seq
        return {"type": "book", "asset": self.asset, "seq": seq, "prevSeq": prev, "bids": bids, "asks": asks,
                "ts": ts}, False


def _levels(levels: Any) -> list[list[str]]:
    """OKX levels `[price, size, "0", orders]` as `[price, size]`, a zero size as "0"."""
    return [[str(level[0]), str(level[1]) if Decimal(str(level[1])) else "0"] for level in levels]
