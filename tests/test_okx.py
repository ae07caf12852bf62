"""`realtime feed --source okx` against a local server replaying OKX's documented frames (tests/data/okx):
tickers, trades and books (`seqId`/`prevSeqId`) reach a gateway through a dropped book update (a gap:
the adapter subscribes again and publishes the new snapshot) and a disconnect (a reconnection)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from realtime.catalog import Catalog, parse_assets
from realtime.feed.binance import FrameRefused
from realtime.feed.okx import Sequence, instruments, trade
from tests.support import (
    ASSETS,
    BTC,
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
from tests.support.exchange import DATA, ReplayedOkx, apply, collected, exact


def test_okx_books_follow_prev_seq_id_and_ask_again_on_a_gap() -> None:
    book = Sequence(BTC)
    assert book.book("update", {"seqId": 5, "prevSeqId": 4}) == (None, False)  # before any snapshot
    snapshot, _ = book.book("snapshot", {"seqId": 10, "prevSeqId": -1, "bids": [["1.5", "2", "0", "1"]],
                                         "asks": [], "ts": "7"})
    assert snapshot is not None
    assert (snapshot["seq"], snapshot["snapshot"], snapshot["bids"]) == (10, True, [["1.5", "2"]])
    update, _ = book.book("update", {"seqId": 11, "prevSeqId": 10, "bids": [["1.5", "0", "0", "0"]],
                                     "asks": []})
    assert update is not None and (update["seq"], update["prevSeq"], update["bids"]) == (11, 10, [["1.5", "0"]])
    assert book.book("update", {"seqId": 11, "prevSeqId": 11}) == (None, False)  # no change
    assert book.book("update", {"seqId": 13, "prevSeqId": 12}) == (None, True) and book.resyncs == 1
    assert book.book("update", {"seqId": 14, "prevSeqId": 13}) == (None, False)  # waits for the snapshot
    with pytest.raises(FrameRefused):
        book.book("update", {"seqId": "x"})


def test_okx_instruments_and_trades_map_to_the_feed() -> None:
    catalog = Catalog(parse_assets(ASSETS))
    assert instruments(catalog, None)["BTC-USDT"] == BTC
    assert instruments(catalog, "btc-usdt=BTC_USDC_PERP") == {"BTC-USDT": BTC}
    assert trade({"tradeId": "1", "px": "2.5", "sz": "1", "side": "sell", "ts": "9"}, BTC)["side"] == "sell"
    with pytest.raises(FrameRefused):
        trade({"tradeId": "1", "px": "2.5", "sz": "1", "side": "hold", "ts": "9"}, BTC)


async def test_okx_adapter_through_a_gap_and_a_disconnect(start_gateway: GatewayFactory,
                                                          redis_server: RedisServer) -> None:
    gateway = await redis_gateway(start_gateway, redis_server)
    channel = gateway.env["REALTIME_PRICE_CHANNEL"]
    exchange = ReplayedOkx(DATA / "okx" / "btc-usdt.json")
    await exchange.start()
    metrics_port = free_port()
    async with collected(redis_server.url, channel) as messages:
        feed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", "feed", "--source", "okx", "--symbols", f"BTC-USDT={BTC}",
            "--ws-url", exchange.url, "--metrics-port", str(metrics_port),
            "--redis-url", redis_server.url, "--price-channel", channel, "--assets", ASSETS, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            await eventually(lambda: sum(m.get("type") == "trade" for m in messages) == 3
                             and any(m.get("seq") == 2001 for m in messages)
                             and sum("type" not in m for m in messages) == 2, timeout=20)
            samples = await scrape(f"http://127.0.0.1:{metrics_port}")
        finally:
            feed.terminate()
            _, stderr = await feed.communicate()
            await exchange.stop()
    book: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
    last = None
    snapshots = []
    for message in (m for m in messages if m.get("type") == "book"):
        if message.get("snapshot"):
            snapshots.append(message["seq"])
            book = {"bids": dict(map(tuple, message["bids"])), "asks": dict(map(tuple, message["asks"]))}
        else:
            assert message["prevSeq"] == last, (message, stderr.decode()[-2000:])
            apply(book, {"b": message["bids"], "a": message["asks"]})
        last = message["seq"]
    assert snapshots == [1000, 1004, 2000]  # at the start, after the gap, after the reconnection
    assert exact(book["bids"]) == exact(exchange.final["bids"])
    assert exact(book["asks"]) == exact(exchange.final["asks"])
    assert [(m["id"], m["side"]) for m in messages if m.get("type") == "trade"] == [
        ("7001", "buy"), ("7002", "sell"), ("7003", "buy")]
    assert [m["ask"] for m in messages if "type" not in m] == ["95851", "95851.2"]
    assert [r["op"] for r in exchange.requests] == ["subscribe", "unsubscribe", "subscribe", "subscribe"]
    assert sample(samples, "realtime_feed_reconnects_total", source="okx") >= 1
    assert sample(samples, "realtime_feed_resyncs_total", source="okx", asset=BTC) == 1
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        view = await alice.call("book:subscribe", {"asset": BTC, "depth": 10})
        assert view["seq"] == 2001 and view["status"] == "live"
        assert exact(dict(view["bids"])) == exact(exchange.final["bids"])
        tape = await alice.call("trades:subscribe", {"asset": BTC, "history": 10})
        assert [t["id"] for t in tape["trades"]] == ["7001", "7002", "7003"]
