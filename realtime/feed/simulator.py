"""A random-walk price simulator for the catalog (quote ticks, and a trade with each).

Used by the embedded feed of `realtime serve` and by `realtime feed`. Its `seq`
starts from the wall clock in microseconds, so a restarted simulator keeps
numbering above everything it published before and gateways never drop its
ticks as replays.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from realtime.catalog import Asset
from realtime.feed.parsing import price_text
from realtime.protocol import FeedTick

# Plausible starting mid prices; unknown assets start at 100.
START_PRICES = {"BTC": 96_000.0, "ETH": 3_600.0, "SOL": 240.0}


class RandomWalk:
    def __init__(self, assets: Iterable[Asset], *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._assets = list(assets)
        self._mid = {a.name: START_PRICES.get(a.name.split("_")[0], 100.0) for a in self._assets}
        self._seq = time.time_ns() // 1000

    @property
    def assets(self) -> list[Asset]:
        return self._assets

    def tick(self, asset: Asset) -> FeedTick:
        """Move one asset's mid price by a small random step and quote around it."""
        mid = self._mid[asset.name] * (1 + self._rng.gauss(0, 0.0005))
        self._mid[asset.name] = mid
        scale = 10**asset.decimals
        half_spread = max(1, round(mid * scale * 0.00005))
        centre = round(mid * scale)
        self._seq += 1
        return {
            "asset": asset.name,
            "bid": centre - half_spread,
            "ask": centre + half_spread,
            "ts": time.time_ns() // 1_000_000,
            "seq": self._seq,
        }

    def trade(self, asset: Asset, tick: FeedTick) -> dict[str, object]:
        """A trade at the tick's bid (a sell) or ask (a buy), of a random size (SPEC §9 `type: trade`)."""
        side = self._rng.choice(("buy", "sell"))
        units = tick["ask"] if side == "buy" else tick["bid"]
        qty = f"{self._rng.randint(1, 5000) / 1000:.3f}"
        return {"type": "trade", "asset": asset.name, "id": str(tick["seq"]),
                "price": price_text(units, asset.decimals), "qty": qty, "side": side, "ts": tick["ts"]}
