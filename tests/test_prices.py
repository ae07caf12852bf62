"""PriceBook: the gate between the feed and the clients (pure logic, no server)."""

from __future__ import annotations

import json

import pytest

from realtime.config import parse_assets
from realtime.feed.catalog import Catalog
from realtime.feed.prices import MAX_SAFE_INTEGER, PriceBook, TickOutcome, TickRejected


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
    prices = book()
    accept(prices, asset="SOL_USDC_PERP", bid=1, ask=2, seq=MAX_SAFE_INTEGER)
    with pytest.raises(TickRejected) as rejected:
        accept(prices, asset="SOL_USDC_PERP", bid=1, ask=2)
    assert rejected.value.outcome is TickOutcome.STALE
    latest = prices.latest("SOL_USDC_PERP")
    assert latest is not None and latest["seq"] == MAX_SAFE_INTEGER
