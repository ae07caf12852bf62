"""Trades and candles in tests: the tests' trade feed, the reference bars (Decimal), node clients of
tests/js/trades.mjs and what they printed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from realtime.trades.candles import text
from tests.support.feed import BTC
from tests.support.node import NodeSession, node_session
from tests.support.tokens import token
from tests.support.waiting import eventually
from tests.support.web import sample, scrape


def trade(n: int, ts: int, asset: str = BTC) -> dict[str, Any]:
    """The n-th trade of the tests' feed: prices and sizes that make exact sums matter."""
    price = f"{95_000 + (n * 37) % 101}.{n % 10}"
    return {"type": "trade", "asset": asset, "id": f"t{n}", "price": price, "qty": f"0.{n % 7 + 1:03d}",
            "side": "buy" if n % 2 else "sell", "ts": ts}


def event_of(message: dict[str, Any]) -> dict[str, Any]:
    return {key: message[key] for key in ("asset", "id", "price", "qty", "side", "ts")}


def bars(trades: list[dict[str, Any]], length: int, interval: str) -> list[dict[str, Any]]:
    """The bars the trades make, computed here with Decimal (the reference)."""
    out: dict[int, dict[str, Any]] = {}
    for item in trades:
        t = item["ts"] - item["ts"] % length
        price, qty = Decimal(item["price"]), Decimal(item["qty"])
        bar = out.get(t)
        if bar is None:
            out[t] = {"asset": item["asset"], "interval": interval, "t": t, "o": price, "h": price, "l": price,
                      "c": price, "v": qty, "n": 1}
        else:
            bar.update(h=max(bar["h"], price), l=min(bar["l"], price), c=price, v=bar["v"] + qty, n=bar["n"] + 1)
    return [{**bar, **{k: text(bar[k]) for k in "ohlcv"}, "closed": True} for _, bar in sorted(out.items())]


async def on_every_pod(urls: list[str], metric: str, count: int, **labels: str) -> None:
    """Wait until `metric` (with `labels`) reaches `count` on every pod."""
    async def all_pods() -> bool:
        for url in urls:
            if sample(await scrape(url), metric, **labels) < count:
                return False
        return True
    await eventually(all_pods, timeout=20)


@contextlib.asynccontextmanager
async def client(url: str, calls: list[list[Any]], **claims: Any) -> AsyncIterator[NodeSession]:
    async with node_session("trades.mjs", {"url": url, "token": token("alice", **claims), "calls": calls}) as session:
        await session.until("subscribed")
        yield session


def of_type(session: NodeSession, kind: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if k not in ("type", "at")}
            for line in session.lines if line["type"] == kind]


def acks(session: NodeSession) -> list[dict[str, Any]]:
    return [line["ack"] for line in session.lines if line["type"] == "ack"]


async def read_until(session: NodeSession, done: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        await session.next(max(0.1, deadline - time.monotonic()))


def next_second(after_ms: int = 0) -> int:
    """A whole second at least a second ahead of now (and of `after_ms`)."""
    return (max(time.time_ns() // 1_000_000, after_ms) // 1000 + 2) * 1000
