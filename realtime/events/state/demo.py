"""The demo portfolio of embedded dev mode: the board's user holds one position per catalog asset.

Its `positions` state is marked to the simulated prices once a second: one
merge of `price` and `profit` for each position whose price moved, so the
price board shows a positions table fed by keyed state, and sends only what
changed. Decimal strings, as trading back ends send money.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from realtime.catalog import Catalog
from realtime.events.state.ops import parse_ops
from realtime.events.state.service import States
from realtime.events.state.store import StateRef
from realtime.feed.prices import PriceBook
from realtime.protocol import GatewayError

logger = logging.getLogger(__name__)

CENTS = Decimal("0.01")


class DemoPortfolio:
    def __init__(self, states: States, book: PriceBook, catalog: Catalog, user: str, *, interval: float = 1.0) -> None:
        self.states = states
        self.book = book
        self.catalog = catalog
        self.ref = StateRef.of("positions", user=user)
        self.interval = interval
        self._opened: dict[str, tuple[str, Decimal, Decimal]] = {}  # asset -> side, qty, entry
        self._marked: dict[str, str] = {}  # asset -> the price last written

    async def run(self) -> None:
        """Open and mark the positions until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            ops = self._ops()
            if ops:
                try:
                    await self.states.store.write(self.ref, parse_ops(ops, self.states.limits))
                except GatewayError as error:
                    logger.warning("demo portfolio: %s", error.message)

    def _ops(self) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        for i, asset in enumerate(self.catalog):
            update = self.book.latest(asset.name, 0)
            if update is None:
                continue
            mid = (Decimal(update["bid"]) + Decimal(update["ask"])) / 2 / Decimal(10) ** asset.decimals
            price = str(mid.quantize(Decimal(1).scaleb(-asset.decimals)))
            if asset.name not in self._opened:
                side, qty = ("buy", Decimal("0.50")) if i % 2 == 0 else ("sell", Decimal("2.00"))
                self._opened[asset.name] = (side, qty, Decimal(price))
                self._marked[asset.name] = price
                ops.append({"op": "set", "key": asset.name, "value": {
                    "asset": asset.name, "side": side, "qty": str(qty), "entry": price, "price": price,
                    "profit": "0.00"}})
            elif self._marked[asset.name] != price:
                side, qty, entry = self._opened[asset.name]
                profit = (Decimal(price) - entry) * qty * (1 if side == "buy" else -1)
                self._marked[asset.name] = price
                ops.append({"op": "merge", "key": asset.name,
                            "changes": {"price": price, "profit": str(profit.quantize(CENTS))}})
        return ops
