"""The `books` scenario: order books against the same clients on quotes only.

Each of the endpoint's assets gets a book of `levels` price levels a side;
the ticker changes `changes` levels per second per asset (new quantities,
one in ten a deletion the next change of that level brings back), in
messages of `per_message` changes, numbered with the publish time in µs (so
a `book:update`'s `seq`, its newest change, gives the update's age). Every
client subscribes to two books (depth 10 or 20, alternating). The same
clients, numbered the same, then subscribe to the same two assets' quotes
ticking at the books' update rate (one per `REALTIME_BOOK_INTERVAL`), for
the comparison: deliveries/s, p50/p99 age, server CPU, bytes per client per
second.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from realtime.backplane.connections import client
from realtime.bench.sampling import CpuWindow
from realtime.bench.scenarios import Run
from realtime.feed.parsing import price_text

DEPTHS = [10, 20]
# The gateway's default REALTIME_BOOK_INTERVAL: the quote comparison ticks each asset this often.
UPDATES_PER_SECOND = 10.0
DECIMALS = 2  # the bench catalog's (targets.start_target)


class BookTicker:
    """Publishes book snapshots and deltas for `assets` on `channel`."""

    def __init__(self, redis_url: str, channel: str, assets: list[str], *, levels: int, seed: int = 5) -> None:
        self.client = client(redis_url, 10.0)
        self.channel = channel
        self.rng = random.Random(seed)
        self.levels = levels
        # Prices 1000.00 - k and 1000.01 + k (in cents): `levels` a side, all present at the start.
        self.prices = {"bids": [100_000 - k for k in range(levels)], "asks": [100_001 + k for k in range(levels)]}
        self.books = {asset: {side: {price: "1.000" for price in prices} for side, prices in self.prices.items()}
                      for asset in assets}
        self.seq = dict.fromkeys(assets, 0)
        self._last_us = 0

    async def close(self) -> None:
        await self.client.aclose()

    def _now_us(self) -> int:
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return self._last_us

    def _rows(self, levels: dict[int, str]) -> list[list[str]]:
        return [[price_text(price, DECIMALS), quantity] for price, quantity in levels.items()]

    async def snapshots(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for asset, book in self.books.items():
                self.seq[asset] = seq = self._now_us()
                pipe.publish(self.channel, orjson.dumps({
                    "type": "book", "asset": asset, "seq": seq, "snapshot": True, "ts": seq // 1000,
                    "bids": self._rows({p: q for p, q in book["bids"].items() if q != "0"}),
                    "asks": self._rows({p: q for p, q in book["asks"].items() if q != "0"})}))
            await pipe.execute()

    def _delta(self, asset: str, changes: int) -> bytes:
        book = self.books[asset]
        changed: dict[str, dict[int, str]] = {"bids": {}, "asks": {}}
        rng = self.rng
        for _ in range(changes):
            side = "bids" if rng.random() < 0.5 else "asks"
            # Mostly near the top, as on an exchange: the top 10 moves often.
            price = self.prices[side][min(self.levels - 1, int(rng.expovariate(0.08)))]
            quantity = "0" if book[side][price] != "0" and rng.random() < 0.1 else f"{rng.uniform(0.001, 9):.3f}"
            book[side][price] = changed[side][price] = quantity
        prev, self.seq[asset] = self.seq[asset], self._now_us()
        return orjson.dumps({"type": "book", "asset": asset, "seq": self.seq[asset], "prevSeq": prev,
                             "ts": self.seq[asset] // 1000, "bids": self._rows(changed["bids"]),
                             "asks": self._rows(changed["asks"])})

    async def run(self, changes_per_second: float, per_message: int, duration: float) -> int:
        """`changes_per_second` level changes per asset for `duration` s; return the messages published."""
        assets = list(self.books)
        rate = changes_per_second / per_message * len(assets)  # messages per second, round-robin over assets
        loop = asyncio.get_running_loop()
        started = loop.time()
        total, sent = int(rate * duration), 0
        while sent < total:
            due = min(total, int((loop.time() - started) * rate) + 1)
            if due > sent:
                async with self.client.pipeline(transaction=False) as pipe:
                    for n in range(sent, due):
                        pipe.publish(self.channel, self._delta(assets[n % len(assets)], per_message))
                    await pipe.execute()
                sent = due
            await asyncio.sleep(max(0.0005, started + sent / rate - loop.time()))
        return sent


async def measure(run: Run, publish: Any, seconds: float, clients: int) -> dict[str, Any]:
    """Run `publish()` (a ticker's run), drain a second, and report what the clients received."""
    await run.fleet.reset(time.time_ns() // 1000)
    closed = (await run.fleet.received()).closed  # the workers count closes since they started
    server = CpuWindow(run.endpoint.pid) if run.endpoint.pid is not None else None
    if server is not None:
        server.start()
    run.fleet.cpu_start()
    published = await publish()
    usage = server.stop() if server is not None else None
    workers = run.fleet.cpu_stop()
    await asyncio.sleep(1.0)  # the last conflated updates and the queues
    received = await run.fleet.received()
    histogram = received.histogram
    return {
        "published": published,
        "deliveries_per_s": round(histogram.count / seconds),
        "p50_ms": histogram.percentile_ms(0.50), "p99_ms": histogram.percentile_ms(0.99),
        "max_ms": histogram.max_us / 1000 if histogram.count else None,
        "server_cpu_pct": round(usage.cpu_pct, 1) if usage else None,
        "server_wait_pct": round(usage.wait_pct, 1) if usage and usage.wait_pct is not None else None,
        "server_rss_mb": round(usage.rss_bytes / 2**20, 1) if usage else None,
        "server_us_per_delivery": (round(usage.cpu_pct / 100 * seconds / histogram.count * 1e6, 2)
                                   if usage and histogram.count else None),
        "bytes_per_client_per_s": round(received.bytes / clients / seconds) if clients else None,
        "worker_cpu_pct": [round(w.cpu_pct, 1) for w in workers],
        "clients_closed": received.closed - closed,
    }


async def books(run: Run) -> dict[str, Any]:
    """2 books per client against 2 quotes per client, same clients, same assets."""
    options, endpoint = run.options, run.endpoint
    seconds = options.book_seconds
    ticker = BookTicker(endpoint.redis_url, endpoint.price_channel, endpoint.assets, levels=options.book_levels)
    try:
        await ticker.snapshots()
        connect = await run.fleet.connect(
            host=endpoint.host, port=endpoint.port, path=endpoint.path, secret=endpoint.secret, first=0,
            count=options.book_clients, assets=endpoint.assets, per_client=2,
            concurrency=options.connect_concurrency, depths=DEPTHS)
        clients = connect.connected
        book_step = await measure(run, lambda: ticker.run(options.book_changes, options.book_per_message, seconds),
                                  seconds, clients)
        book_step["changes_per_s_per_asset"] = options.book_changes
        await run.fleet.close_clients()
        quotes = await run.connect(options.book_clients, 2)
        quote_step = await measure(run, lambda: run.ticker.run(UPDATES_PER_SECOND * len(endpoint.assets), seconds),
                                   seconds, quotes["connected"])
        quote_step["ticks_per_s_per_asset"] = UPDATES_PER_SECOND
    finally:
        await ticker.close()
    return {"clients": options.book_clients, "assets": len(endpoint.assets), "levels": options.book_levels,
            "depths": DEPTHS, "seconds": seconds, "connected": clients, "connect_errors": connect.errors,
            "books": book_step, "quotes": quote_step}
