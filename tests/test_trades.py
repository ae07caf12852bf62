"""Trades and candles (SPEC §9) with the real socket.io-client on two pods sharing Redis.

The test is the feed: it publishes `{"type": "trade"}` messages on the price
channel with chosen `ts`, computes the bars they make with `Decimal`, and
node clients (tests/js/trades.mjs) on each pod print every ack and event.
"""

from __future__ import annotations

import itertools
import time
from decimal import Decimal
from typing import Any

import pytest

from realtime.catalog import Catalog, parse_assets
from realtime.trades.candles import GRACE_MS, Series
from realtime.trades.messages import TradeOutcome, TradeRefused, parse
from tests.support import (
    ASSETS,
    BTC,
    ETH,
    Cluster,
    ClusterFactory,
    GatewayFactory,
    NodeSession,
    eventually,
    publish,
)
from tests.support.trades import acks, bars, client, event_of, next_second, of_type, on_every_pod, read_until, trade

DELAY = 3  # s: the delayed tier the tests' pods offer


async def send(cluster: Cluster, *messages: dict[str, Any]) -> None:
    await publish(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"], *messages)


async def ingested(cluster: Cluster, count: int) -> None:
    await on_every_pod([pod.url for pod in cluster.pods], "realtime_trades_ingested_total", count, outcome="ok")


async def closes(cluster: Cluster, interval: str, count: int) -> None:
    await on_every_pod([pod.url for pod in cluster.pods], "realtime_candles_closed_total", count, interval=interval)


# The pieces alone.

def test_a_series_adds_exactly_and_closes_on_a_later_interval() -> None:
    series = Series(BTC, "1s", keep=10, since=0)
    assert series.add(Decimal("0.1"), Decimal("0.2"), 1_000) is None
    assert series.add(Decimal("0.3"), Decimal("0.1"), 1_999) is None
    assert series.add(Decimal("0.2"), Decimal("0.000000000000000001"), 1_500) is None
    closed = series.add(Decimal("5"), Decimal("1"), 2_000)
    assert closed is not None
    assert closed.event(BTC, "1s", closed=True) == {"asset": BTC, "interval": "1s", "t": 1_000, "o": "0.1",
                                                     "h": "0.3", "l": "0.1", "c": "0.2",
                                                     "v": "0.300000000000000001", "n": 3, "closed": True}
    assert series.add(Decimal("1"), Decimal("1"), 1_999) is None and series.late == 1  # late: left out
    assert series.expire(3_000 + GRACE_MS - 1) is None
    assert series.expire(3_000 + GRACE_MS) is not None and series.open is None


def test_a_trade_is_validated() -> None:
    catalog = Catalog(parse_assets(ASSETS))
    parsed = parse({"type": "trade", "asset": BTC.lower(), "id": 7, "price": "95850.1", "qty": "0.010",
                    "side": "buy", "ts": 1}, catalog)
    assert parsed == {"asset": BTC, "id": "7", "price": "95850.1", "qty": "0.010", "side": "buy", "ts": 1}
    for message, outcome in [
        ({"asset": "NOPE", "id": "1", "price": "1", "qty": "1", "side": "buy"}, TradeOutcome.UNKNOWN),
        ({"asset": BTC, "id": "1", "price": "1e3", "qty": "1", "side": "buy"}, TradeOutcome.MALFORMED),
        ({"asset": BTC, "id": "1", "price": "1", "qty": "0", "side": "buy"}, TradeOutcome.MALFORMED),
        ({"asset": BTC, "id": "1", "price": "1", "qty": "1", "side": "hold"}, TradeOutcome.MALFORMED),
        ({"asset": BTC, "id": "", "price": "1", "qty": "1", "side": "buy"}, TradeOutcome.MALFORMED),
    ]:
        with pytest.raises(TradeRefused) as refused:
            parse(message, catalog)
        assert refused.value.outcome == outcome


# Two pods sharing Redis, node clients.

@pytest.fixture
def pods(start_cluster: ClusterFactory) -> Cluster:
    return start_cluster(pods=2, delay_tiers=f"0,{DELAY}")


async def test_trades_last_n_exact_and_live_once_each_in_order_on_both_pods(
        pods: Cluster, start_gateway: GatewayFactory) -> None:
    start = time.time_ns() // 1_000_000
    before = [trade(n, start + n) for n in range(30)]
    await send(pods, *before)
    await send(pods, before[5], before[29])  # duplicates: kept once
    await ingested(pods, 30)
    calls = [["trades:subscribe", {"asset": BTC, "history": 10}]]
    async with client(pods.pods[0].url, calls) as one, client(pods.pods[1].url, calls) as two:
        for session in (one, two):
            assert acks(session) == [{"ok": True, "asset": BTC, "trades": [event_of(m) for m in before[-10:]]}]
        after = [trade(n, start + n) for n in range(30, 60)]
        await send(pods, *after[:10], before[12], *after[10:])
        for session in (one, two):
            await read_until(session, lambda s=session: len(of_type(s, "trade")) >= 30)
        # A moment for anything extra to show up, then: each once, in feed order, nothing else.
        await send(pods, trade(60, start + 60, ETH))
        await ingested(pods, 61)
        for session in (one, two):
            assert of_type(session, "trade") == [event_of(m) for m in after]
    # A pod started later answers the same, from the store.
    late = await start_gateway(redis_url=pods.redis.url, delay_tiers=f"0,{DELAY}",
                         price_channel=pods.env["REALTIME_PRICE_CHANNEL"],
                         manager_channel=pods.env["REALTIME_MANAGER_CHANNEL"], instance_id="late")
    async with client(late.url, [["trades:subscribe", {"asset": BTC, "history": 100}]]) as three:
        assert acks(three) == [{"ok": True, "asset": BTC, "trades": [event_of(m) for m in before + after]}]


async def test_candles_are_exact_identical_on_both_pods_each_closed_once(pods: Cluster) -> None:
    base = next_second()
    # 4 whole seconds of trades, 4 per second; the fifth second's trade closes the fourth bar.
    trades = [trade(n, base + n * 250) for n in range(17)]
    calls = [["candles:subscribe", {"asset": BTC, "interval": "1s", "history": 500}],
             ["candles:subscribe", {"asset": BTC, "interval": "1m", "history": 5}]]
    async with client(pods.pods[0].url, calls) as one, client(pods.pods[1].url, calls) as two, \
            client(pods.pods[1].url, calls[:1], delay=DELAY) as delayed:
        await eventually(lambda: time.time_ns() // 1_000_000 >= base, timeout=5)
        for item in trades:  # a trade every 250 ms of feed time, as they happen
            await send(pods, item)
            await eventually(lambda t=item["ts"]: time.time_ns() // 1_000_000 >= t, timeout=3)
        expected = bars(trades, 1_000, "1s")

        def closed_of(session: NodeSession, interval: str = "1s") -> list[dict[str, Any]]:
            return [c for c in of_type(session, "candle") if c["interval"] == interval and c["closed"]]

        for session in (one, two):
            await read_until(session, lambda s=session: len(closed_of(s)) >= 5, timeout=20)  # the 5th by the clock
            assert closed_of(session) == expected, session.lines
            # The open bar: at most once per second per asset and interval (with a margin for the network).
            for interval in ("1s", "1m"):
                times = [line["at"] for line in session.lines if line["type"] == "candle"
                         and line["interval"] == interval and not line["closed"]]
                assert times and all(b - a >= 800 for a, b in itertools.pairwise(times)), times
            opens = [c for c in of_type(session, "candle") if c["interval"] == "1m" and not c["closed"]]
            minute = bars(trades, 60_000, "1m")
            assert {**opens[-1], "closed": True} == minute[-1]  # the open 1m bar holds every trade so far
        # The delayed connection: the same bars, each at least DELAY after it closed, and no open bar.
        await read_until(delayed, lambda: len(of_type(delayed, "candle")) >= 5, timeout=20)
        assert of_type(delayed, "candle") == expected
        got = {line["t"]: line["at"] for line in one.lines if line["type"] == "candle" and line["closed"]}
        for line in delayed.lines:
            if line["type"] == "candle":
                assert line["at"] - got[line["t"]] >= DELAY * 1000 - 300, (line, got[line["t"]])
        # A new subscriber on either pod: the same closed bars (history 3: the last three).
        for pod in pods.pods:
            async with client(pod.url, calls[:1]) as later:
                ack = acks(later)[0]
                assert ack["ok"] and ack["candles"] == expected


async def test_a_delayed_connection_gets_no_trades_and_only_old_candles(pods: Cluster) -> None:
    base = next_second()
    # The second closes the first's 1s bar; its own stays open for a minute of the pods' clocks.
    first, second = trade(0, base), trade(1, base + 60_000)
    await eventually(lambda: time.time_ns() // 1_000_000 >= base + 1_000, timeout=5)
    await send(pods, first, second)
    await ingested(pods, 2)
    await closes(pods, "1s", 1)
    closed = bars([first], 1_000, "1s")
    calls = [["trades:subscribe", {"asset": BTC, "history": 5}],
             ["candles:subscribe", {"asset": BTC, "interval": "1s", "history": 5}]]
    async with client(pods.url, calls) as now:
        _, candles_ack = acks(now)
        assert candles_ack["candles"] == [*closed, {**bars([second], 1_000, "1s")[0], "closed": False}]
    async with client(pods.url, calls, delay=DELAY) as delayed:
        trades_ack, candles_ack = acks(delayed)
        assert trades_ack["ok"] is False and trades_ack["error"]["code"] == "FORBIDDEN"
        assert candles_ack == {"ok": True, "asset": BTC, "interval": "1s", "candles": []}  # closed < DELAY ago
        assert of_type(delayed, "trade") == []
    await eventually(lambda: time.time_ns() // 1_000_000 >= base + 1_000 + DELAY * 1000 + 500, timeout=DELAY + 5)
    async with client(pods.url, calls[1:], delay=DELAY) as delayed:
        assert acks(delayed) == [{"ok": True, "asset": BTC, "interval": "1s", "candles": closed}]


async def test_bad_payloads(pods: Cluster) -> None:
    calls = [
        ["trades:subscribe", None],
        ["trades:subscribe", {"asset": "NOPE", "history": 1}],
        ["trades:subscribe", {"asset": BTC, "history": 101}],
        ["trades:subscribe", {"asset": BTC, "history": "5"}],
        ["candles:subscribe", {"asset": BTC, "interval": "2m", "history": 1}],
        ["candles:subscribe", {"asset": BTC, "interval": "1m", "history": 501}],
        ["candles:subscribe", {"asset": 7, "interval": "1m"}],
        ["candles:subscribe", {"asset": "NOPE", "interval": "1m"}],
        ["trades:subscribe", {"asset": ETH, "history": 1}],  # not in the token's assets
        ["candles:subscribe", {"asset": ETH, "interval": "1m"}],
        ["trades:unsubscribe", {"asset": "NOPE"}],
        ["trades:subscribe", {"asset": BTC, "history": 0}],
    ]
    async with client(pods.url, calls, assets=[BTC]) as session:
        codes = [ack.get("error", {}).get("code") if not ack.get("ok") else "ok" for ack in acks(session)]
    assert codes == ["BAD_REQUEST", "UNKNOWN_ASSET", "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST",
                     "BAD_REQUEST", "UNKNOWN_ASSET", "FORBIDDEN", "FORBIDDEN", "UNKNOWN_ASSET", "ok"]


async def test_recovery_restores_trade_and_candle_subscriptions(pods: Cluster) -> None:
    start = time.time_ns() // 1_000_000
    calls = [["trades:subscribe", {"asset": BTC, "history": 0}],
             ["candles:subscribe", {"asset": BTC, "interval": "1m", "history": 0}]]
    async with client(pods.url, calls) as session:
        await send(pods, trade(0, start))
        await read_until(session, lambda: len(of_type(session, "trade")) == 1)
        await session.send({"cmd": "drop"})
        await read_until(session, lambda: any(line["type"] == "connect" and line["recovered"]
                                              for line in session.lines[1:]))
        await send(pods, trade(1, start + 1), trade(2, start + 2))
        await read_until(session, lambda: len(of_type(session, "trade")) == 3)
        await read_until(session, lambda: any(c["n"] >= 3 for c in of_type(session, "candle")), timeout=10)
        assert [t["id"] for t in of_type(session, "trade")] == ["t0", "t1", "t2"]


async def test_an_asset_without_trades_makes_candles_from_the_quote_mid(pods: Cluster) -> None:
    base = next_second()
    sol = "SOL_USDC_PERP"  # 2 decimals
    ticks = [{"asset": sol, "bid": 24_000, "ask": 24_003, "seq": 1, "ts": base + 100},
             {"asset": sol, "bid": 24_010, "ask": 24_012, "seq": 2, "ts": base + 600},
             {"asset": sol, "bid": 24_001, "ask": 24_002, "seq": 3, "ts": base + 1_100}]
    await eventually(lambda: time.time_ns() // 1_000_000 >= base + 1_100, timeout=5)
    await send(pods, *ticks)
    await closes(pods, "1s", 1)
    async with client(pods.url, [["candles:subscribe", {"asset": sol, "interval": "1s", "history": 5}]]) as session:
        assert acks(session)[0]["candles"] == [
            {"asset": sol, "interval": "1s", "t": base, "o": "240.015", "h": "240.11", "l": "240.015",
             "c": "240.11", "v": "0", "n": 2, "closed": True},
            {"asset": sol, "interval": "1s", "t": base + 1_000, "o": "240.015", "h": "240.015", "l": "240.015",
             "c": "240.015", "v": "0", "n": 1, "closed": False}]


async def test_embedded_mode_simulates_trades_and_their_candles(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(simulated_rate=5)
    # The simulator makes one trade per asset per round, BTC's first: 15 trades of the three assets
    # hold at least 5 of BTC's (10 held only 4 when the ack came between two rounds).
    await on_every_pod([gateway.url], "realtime_trades_ingested_total", 15, outcome="ok")
    calls = [["trades:subscribe", {"asset": BTC, "history": 5}],
             ["candles:subscribe", {"asset": BTC, "interval": "1s", "history": 5}]]
    async with client(gateway.url, calls) as session:
        trades_ack, candles_ack = acks(session)
        assert len(trades_ack["trades"]) == 5 and candles_ack["candles"][-1]["closed"] is False
        await read_until(session, lambda: len(of_type(session, "trade")) >= 3)
        await read_until(session, lambda: any(c["closed"] for c in of_type(session, "candle")), timeout=10)
        ids = [t["id"] for t in trades_ack["trades"] + of_type(session, "trade")]
        assert len(ids) == len(set(ids))
