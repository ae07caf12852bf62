"""The delayed tiers' history (pure logic): conflation per second, release when due, a fixed bound."""

from __future__ import annotations

from realtime.feed.tiers import History, Tier
from realtime.protocol import PriceUpdate


def test_one_record_per_due_second_the_newest_wins() -> None:
    history = History(capacity=5)
    history.add(10, 1, 2, 1, 100)
    history.add(10, 3, 4, 2, 200)  # same second: replaces
    history.add(11, 5, 6, 3, 300)
    assert history.count == 2
    assert history.release(9) is None
    assert history.release(10) == (3, 4, 2, 200)
    assert history.release(12) == (5, 6, 3, 300) and history.count == 0


def test_the_ring_never_grows_past_its_capacity() -> None:
    history = History(capacity=3)
    size = history.nbytes
    for second in range(10):
        history.add(second, second, second + 1, second, second)
    assert history.count == 3 and history.nbytes == size == 3 * 5 * 8
    assert history.release(100) == (9, 10, 9, 9)  # only the newest due record is sent


def test_a_tier_releases_ticks_at_least_its_delay_old() -> None:
    tier = Tier(3, {"BTC": 4})
    update: PriceUpdate = {"asset": "BTC", "bid": 1, "ask": 2, "decimals": 4, "seq": 7, "ts": 1_000_500}
    tier.add(update, arrived_ms=1_000_600)  # due at ceil(1_003_600 / 1000) = second 1004
    assert list(tier.release(1003)) == []
    assert list(tier.release(1004)) == [update] and tier.latest["BTC"] == update
    assert tier.rooms["BTC"] == "asset:BTC@3"
