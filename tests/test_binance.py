"""`realtime feed --source binance` against a local server replaying Binance's documented frames
(tests/data/binance): quotes, trades and books reach a gateway through a dropped depth update (a gap,
resynced from the REST snapshot) and a disconnect (a reconnection, a fresh snapshot)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from realtime.catalog import Catalog, parse_assets
from realtime.feed.binance import Depth, quote, symbols, trade
from tests.support import (
    ASSETS,
    BTC,
    ETH,
    ROOT,
    GatewayFactory,
    RedisServer,
    connected,
    eventually,
    free_port,
    redis_gateway,
    sample,
    scrape,
    token,
)
from tests.support.exchange import DATA, ReplayedExchange, apply, collected, exact


def update(first: int, last: int, prev: int | None = None, bids: list[list[str]] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last,
                            "b": bids or [], "a": []}
    if prev is not None:
        data["pu"] = prev
    return data


# The rules alone.

def test_depth_buffers_until_a_snapshot_and_chains_seq_and_prev_seq() -> None:
    depth = Depth(BTC)
    assert depth.event(update(10, 12, bids=[["1.50", "2"]])) == ([], True)  # first event: fetch a snapshot
    assert depth.event(update(13, 13, bids=[["1.50", "0"]])) == ([], False)  # buffered
    messages, again = depth.snapshot({"lastUpdateId": 11, "bids": [["1.40000000", "1.0"]], "asks": []})
    assert not again
    assert [(m["seq"], m.get("prevSeq"), m.get("snapshot")) for m in messages] == [
        (11, None, True), (12, 11, None), (13, 12, None)]
    assert depth.bids == {"1.4": "1"}  # 1.50 came and went
    messages, fetch = depth.event(update(14, 14, bids=[["1.30", "3"]]))
    assert messages[0]["prevSeq"] == 13 and not fetch
    assert depth.event(update(16, 16)) == ([], True) and depth.resyncs == 1  # spot: U 16 > 14 + 1, 15 is missed


def test_depth_refetches_a_stale_snapshot_and_resyncs_on_a_gap() -> None:
    depth = Depth(BTC)
    depth.event(update(20, 21, prev=19))
    assert depth.snapshot({"lastUpdateId": 18, "bids": [], "asks": []}) == ([], True)  # older than U: again
    messages, again = depth.snapshot({"lastUpdateId": 21, "bids": [], "asks": []})
    assert [m["seq"] for m in messages] == [21] and not again
    assert depth.event(update(22, 22, prev=21))[0][0]["prevSeq"] == 21
    assert depth.event(update(24, 24, prev=23)) == ([], True) and depth.resyncs == 1  # pu 23 is not 22
    assert depth.event(update(25, 25, prev=24)) == ([], False)  # buffered until the snapshot
    messages, _ = depth.snapshot({"lastUpdateId": 24, "bids": [], "asks": []})
    assert [(m["seq"], m.get("prevSeq")) for m in messages] == [(24, None), (25, 24)]


def test_frames_and_symbols_map_to_the_feed() -> None:
    catalog = Catalog(parse_assets(ASSETS))
    assert symbols(catalog, None) == {"BTCUSDT": BTC, "ETHUSDT": ETH, "SOLUSDT": "SOL_USDC_PERP"}
    assert symbols(catalog, "btcusdt=btc_usdc_perp") == {"BTCUSDT": BTC}
    with pytest.raises(ValueError, match="SYMBOL=ASSET"):
        symbols(catalog, "DOGEUSDT=DOGE")
    assert quote({"u": 7, "s": "BTCUSDT", "b": "1.10", "B": "1", "a": "1.20", "A": "1"}, BTC)["seq"] == 7
    assert trade({"e": "aggTrade", "s": "BTCUSDT", "a": 9, "p": "2.50000000", "q": "1.000", "T": 5, "m": True},
                 BTC) == {"type": "trade", "asset": BTC, "id": "9", "price": "2.5", "qty": "1", "side": "sell",
                          "ts": 5}


# The adapter, a gateway and the replayed exchange.

async def test_binance_adapter_through_a_gap_and_a_disconnect(start_gateway: GatewayFactory,
                                                              redis_server: RedisServer) -> None:
    gateway = await redis_gateway(start_gateway, redis_server)
    channel = gateway.env["REALTIME_PRICE_CHANNEL"]
    exchange = ReplayedExchange(DATA / "binance" / "btcusdt.json")
    await exchange.start()
    metrics_port = free_port()
    async with collected(redis_server.url, channel) as messages:
        feed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", "feed", "--source", "binance", "--symbols", f"BTCUSDT={BTC}",
            "--ws-url", exchange.url, "--rest-url", exchange.url, "--metrics-port", str(metrics_port),
            "--redis-url", redis_server.url, "--price-channel", channel, "--assets", ASSETS, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            books = lambda: [m for m in messages if m.get("type") == "book"]  # noqa: E731
            await eventually(lambda: any(m["seq"] == 108 for m in books()), timeout=20)
            await eventually(lambda: sum(m.get("type") == "trade" for m in messages) == 3
                             and sum("type" not in m for m in messages) == 2, timeout=5)  # the last frames
            samples = await scrape(f"http://127.0.0.1:{metrics_port}")
        finally:
            feed.terminate()
            _, stderr = await feed.communicate()
            await exchange.stop()
    # The book: a chain of seq/prevSeq, restarted by a snapshot at the start, after the gap and after the
    # reconnection; applied in order it is the exchange's book after every update it made.
    book: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
    last = None
    snapshots = 0
    for message in books():
        if message.get("snapshot"):
            snapshots += 1
            book = {"bids": dict(map(tuple, message["bids"])), "asks": dict(map(tuple, message["asks"]))}
        else:
            assert message["prevSeq"] == last, (message, stderr.decode()[-2000:])
            apply(book, {"b": message["bids"], "a": message["asks"]})
        last = message["seq"]
    assert snapshots >= 3
    assert exact(book["bids"]) == exact(exchange.book["bids"]) and exact(book["asks"]) == exact(exchange.book["asks"])
    # Quotes and trades, normalised.
    assert [m["bid"] for m in messages if "type" not in m] == ["95850.10000000", "95850.10000000"]
    assert [(m["id"], m["price"], m["qty"], m["side"]) for m in messages if m.get("type") == "trade"] == [
        ("5001", "95851", "0.01", "buy"), ("5002", "95850.5", "0.123", "sell"), ("5003", "95851.2", "0.5", "buy")]
    assert exchange.opened >= 2 and "btcusdt@depth@100ms" in exchange.streams[0]
    assert sample(samples, "realtime_feed_reconnects_total", source="binance") >= 1
    assert sample(samples, "realtime_feed_resyncs_total", source="binance", asset=BTC) == 1
    assert sample(samples, "realtime_feed_frames_total", source="binance", kind="refused") == 1  # XRPUSDT
    # The gateway heard it all: its book is live at the last seq, the trades are on its tape.
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        view = await alice.call("book:subscribe", {"asset": BTC, "depth": 10})
        assert view["seq"] == 108 and view["status"] == "live"
        assert exact(dict(view["bids"])) == exact(exchange.book["bids"])
        assert exact(dict(view["asks"])) == exact(exchange.book["asks"])
        tape = await alice.call("trades:subscribe", {"asset": BTC, "history": 10})
        assert [t["id"] for t in tape["trades"]] == ["5001", "5002", "5003"]
