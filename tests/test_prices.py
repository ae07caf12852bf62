"""PriceBook: the gate between the feed and the clients (pure logic, no server)."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from realtime.catalog import Catalog, parse_assets
from realtime.feed import parsing
from realtime.feed.parsing import MAX_SAFE_INTEGER, MAX_UPSTREAM_SEQ
from realtime.feed.prices import PriceBook, TickRejected
from realtime.protocol import TickOutcome


def book() -> PriceBook:
    return PriceBook(Catalog(parse_assets("BTC_USDC_PERP:4,SOL_USDC_PERP:2")))


def accept(prices: PriceBook, **message: object) -> dict[str, object]:
    return dict(prices.accept(json.dumps(message)))


def test_upstream_seq_passes_through_and_pod_numbers_the_rest() -> None:
    prices = book()
    assert accept(prices, asset="btc_usdc_perp", bid=1, ask=2, seq=41, ts=7) == \
        {"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2, "decimals": 4, "seq": 41, "ts": 7}
    assert accept(prices, asset="BTC_USDC_PERP", bid=1, ask=2)["seq"] == 42
    assert prices.latest("BTC_USDC_PERP") is not None and prices.latest("SOL_USDC_PERP") is None


@pytest.mark.parametrize(("message", "outcome"), [
    ({"asset": "BTC_USDC_PERP", "bid": 3, "ask": 2}, TickOutcome.CROSSED),
    ({"asset": "DOGE", "bid": 1, "ask": 2}, TickOutcome.UNKNOWN),
    ({"asset": "BTC_USDC_PERP", "bid": 1.5, "ask": 2}, TickOutcome.MALFORMED),
    ({"asset": "BTC_USDC_PERP", "bid": 1, "ask": MAX_SAFE_INTEGER + 1}, TickOutcome.MALFORMED),
    ({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2, "seq": 0}, TickOutcome.STALE),
])
def test_rejections(message: dict[str, object], outcome: TickOutcome) -> None:
    with pytest.raises(TickRejected) as rejected:
        book().accept(json.dumps(message))
    assert rejected.value.outcome is outcome


def test_pod_numbering_never_passes_what_javascript_holds_exactly() -> None:
    # Upstream seq is capped at 2**52, so numbering on past a restart always has room below 2**53.
    prices = book()
    with pytest.raises(TickRejected) as rejected:
        accept(prices, asset="SOL_USDC_PERP", bid=1, ask=2, seq=MAX_SAFE_INTEGER)
    assert rejected.value.outcome is TickOutcome.MALFORMED
    accept(prices, asset="SOL_USDC_PERP", bid=1, ask=2, seq=MAX_UPSTREAM_SEQ, ts=500)
    for n in range(1, 10):  # the publisher restarts again and again: the wire goes on rising, below 2**53
        assert accept(prices, asset="SOL_USDC_PERP", bid=1, ask=2, seq=n, ts=n * 1000)["seq"] == MAX_UPSTREAM_SEQ + n
    latest = prices.latest("SOL_USDC_PERP")
    assert latest is not None and latest["seq"] <= MAX_SAFE_INTEGER


# Exchange-style numbers (issue 14) and timestamps as real feeds send them (issue 12, item 6).

@pytest.mark.parametrize(("text", "decimals", "units"), [
    ("95850.1234", 4, 958_501_234), ("95851", 4, 958_510_000), ("0.5", 2, 50), ("7.10", 1, 71),
    ("90071992547.4099", 4, 900_719_925_474_099),
])
def test_decimal_strings_are_exact(text: str, decimals: int, units: int) -> None:
    assert parsing.price(text, "bid", decimals) == units


@pytest.mark.parametrize("text", ["1.23456", "-1", "1e5", " 1", "1.", ".5", "0x10", "NaN", "1,000", "9" * 30])
def test_bad_decimal_strings_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(parsing.NumberRefused) as refused:
        parsing.price(text, "bid", 4)
    assert "bid" in str(refused.value)


def test_more_decimals_than_the_catalog_is_malformed_with_the_reason() -> None:
    with pytest.raises(TickRejected) as rejected:
        accept(book(), asset="SOL_USDC_PERP", bid="240.123", ask="240.13")
    assert rejected.value.outcome is TickOutcome.MALFORMED
    assert "more than the asset's 2 decimals" in rejected.value.reason


@pytest.mark.parametrize(("ts", "ms"), [(1_764_500_000_123.4, 1_764_500_000_123),
                                        (1_764_500_000_123, 1_764_500_000_123), (0.9, 0), (5, 5)])
def test_numeric_ts_is_integer_ms(ts: float, ms: int) -> None:
    assert accept(book(), asset="BTC_USDC_PERP", bid=1, ask=2, ts=ts)["ts"] == ms


@pytest.mark.parametrize("ts", ["1764500000123", True, -1, -0.5, float("inf"), float("nan"), 2**53, [1], {"a": 1}])
def test_only_non_numeric_negative_or_absurd_ts_is_refused(ts: object) -> None:
    with pytest.raises(TickRejected) as rejected:
        book().accept(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2, "ts": ts}, allow_nan=True))
    assert rejected.value.outcome is TickOutcome.MALFORMED


# Numbering across feed restarts (issue 12, item 5); the same on every pod (issue 11).

def feed_through(prices: PriceBook, ticks: list[dict[str, object]]) -> list[int | None]:
    seqs: list[int | None] = []
    for tick in ticks:
        try:
            seqs.append(prices.accept(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2, **tick}))["seq"])
        except TickRejected:
            seqs.append(None)
    return seqs


def test_a_restarted_publisher_with_ts_resumes_at_once_above_the_last_wire_seq() -> None:
    seqs = feed_through(book(), [{"seq": 500, "ts": 1000}, {"seq": 501, "ts": 1001},
                                 {"seq": 1, "ts": 2000}, {"seq": 2, "ts": 2001}, {"seq": 1, "ts": 2001}])
    assert seqs == [500, 501, 502, 503, None]


def test_a_restarted_publisher_without_ts_resumes_after_a_short_run() -> None:
    seqs = feed_through(book(), [{"seq": 500}, {"seq": 1}, {"seq": 2}, {"seq": 3}, {"seq": 4}])
    assert seqs == [500, None, None, 501, 502]


def test_one_poisoned_seq_or_ts_cannot_silence_an_asset() -> None:
    now = int(time.time() * 1000)
    leap = feed_through(book(), [{"seq": 10, "ts": now}, {"seq": MAX_UPSTREAM_SEQ, "ts": now + 1},
                                 {"seq": 11, "ts": now + 2}, {"seq": 12, "ts": now + 3}])
    assert leap == [10, None, 11, 12]
    first = feed_through(book(), [{"seq": MAX_UPSTREAM_SEQ}, {"seq": 11}, {"seq": 12}, {"seq": 13}, {"seq": 14}])
    assert first == [MAX_UPSTREAM_SEQ, None, None, MAX_UPSTREAM_SEQ + 1, MAX_UPSTREAM_SEQ + 2]
    ahead = {"seq": 10, "ts": now + 3_600_000}
    future = feed_through(book(), [ahead, *[{"seq": s, "ts": now + s} for s in range(11, 16)]])
    assert future == [10, None, None, 11, 12, 13]


def restarts_shared(prices: PriceBook, ticks: list[dict[str, object]]) -> list[tuple[str, int]]:
    """The feed restarts the verdicts of `ticks` give to share with other pods."""
    shared = []
    for tick in ticks:
        with contextlib.suppress(TickRejected):
            restart = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2, **tick})).restart
            if restart is not None:
                shared.append(restart)
    return shared


def test_only_restarts_of_a_confirmed_numbering_are_shared_with_other_pods() -> None:
    poisoned = restarts_shared(book(), [{"seq": MAX_UPSTREAM_SEQ, "ts": 1}, {"seq": 5, "ts": 2}])
    honest = restarts_shared(book(), [{"seq": 4, "ts": 1}, {"seq": 5, "ts": 2}, {"seq": 1, "ts": 3}])
    assert poisoned == [] and honest == [("BTC_USDC_PERP", 5)]


def test_a_replay_with_ts_is_never_taken_for_a_restart() -> None:
    now = int(time.time() * 1000)
    seqs = feed_through(book(), [{"seq": 100, "ts": now}, *[{"seq": s, "ts": now - 5000 + s} for s in range(1, 6)]])
    assert seqs == [100, None, None, None, None, None]


def test_two_books_fed_the_same_messages_number_them_alike() -> None:
    # Two pods on one channel see the same messages in the same order.
    now = int(time.time() * 1000)
    messages = [{"seq": 7, "ts": now}, {"seq": 8, "ts": now + 1}, {"seq": 1, "ts": now + 2}, {"ts": now + 3},
                {"ts": now + 3}, {"seq": 2}, {"seq": 3}, {"seq": 4}, {"seq": 1, "ts": now + 9}]
    assert feed_through(book(), messages) == feed_through(book(), messages)


def test_a_feed_that_mixes_ticks_with_and_without_seq_keeps_the_wire_rising() -> None:
    assert feed_through(book(), [{"seq": 10}, {}, {"seq": 11}, {"seq": 12}]) == [10, 11, 12, 13]


def test_ts_only_feeds_are_numbered_from_ts() -> None:
    assert feed_through(book(), [{"ts": 5}, {"ts": 5}, {"ts": 6}, {"ts": 2000}]) == [5001, 5002, 6001, 2_000_001]


# The price band (issue 14).

def banded() -> PriceBook:
    return PriceBook(Catalog(parse_assets("BTC_USDC_PERP:4")), band=0.1)


def test_a_spike_is_held_then_dropped_when_the_next_tick_does_not_confirm_it() -> None:
    prices = banded()
    first = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1000, "ask": 1002}))
    assert [u["bid"] for u in first.updates] == [1000]
    held = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 5000, "ask": 5002}))
    assert held.updates == []
    after = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1001, "ask": 1003}))
    assert [u["bid"] for u in after.updates] == [1001]
    assert first.band_dropped + held.band_dropped + after.band_dropped == 1


def test_a_spike_confirmed_by_the_next_tick_is_accepted_with_it_in_order() -> None:
    prices = banded()
    first = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1000, "ask": 1002}))
    held = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1500, "ask": 1502}))
    assert held.updates == []
    latest = prices.latest("BTC_USDC_PERP")
    assert latest is not None and latest["bid"] == 1000  # the held tick is nobody's snapshot
    confirmed = prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1510, "ask": 1512}))
    assert [u["bid"] for u in confirmed.updates] == [1500, 1510]
    assert confirmed.updates[0]["seq"] < confirmed.updates[1]["seq"]
    assert first.band_dropped + held.band_dropped + confirmed.band_dropped == 0


def test_a_halt_drops_ticks_until_open() -> None:
    prices = banded()
    prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "status": "halted"}))
    with pytest.raises(TickRejected) as rejected:
        prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2}))
    assert rejected.value.outcome is TickOutcome.HALTED
    prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "status": "open"}))
    assert prices.accept_all(json.dumps({"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2})).updates[0]["bid"] == 1
    assert [c["status"] for c in prices.statuses.drain()] == ["halted", "stale", "live"]
