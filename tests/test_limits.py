"""Inbound limits: token buckets (limits.py), and the limits on a live gateway."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import socketio

from realtime.clients.limits import AddressLimiter, EventLimiter, TokenBucket, Verdict
from tests.support import InProcessFactory, connected, eventually, sample, scrape, token

BTC = "BTC_USDC_PERP"


# The buckets, with the clock in the test's hand.

def test_token_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == 0.5
    assert bucket.take(100.5) and not bucket.take(100.5)
    assert not bucket.full(101.9) and bucket.full(102.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]  # never above the burst


def test_event_limiter_cuts_only_sustained_abuse() -> None:
    limiter = EventLimiter(rate=1, burst=3, abuse_limit=2, abuse_window=10)
    t = time.monotonic()  # the buckets start full now
    # A burst of any size at once is refused, never cut.
    assert [limiter.check(t) for _ in range(1000)] == [Verdict.ALLOW] * 3 + [Verdict.REFUSE] * 997
    # Forgiven once quiet long enough: the next run of refusals starts its own window.
    assert [limiter.check(t + 100) for _ in range(500)] == [Verdict.ALLOW] * 3 + [Verdict.REFUSE] * 497
    # Still sending past the rate and the abuse limit a window after the run began: cut.
    assert Verdict.CUT not in [limiter.check(t + 100 + i / 4) for i in range(1, 40)]
    assert Verdict.CUT in [limiter.check(t + 110) for _ in range(3)]


def test_event_limiter_refuses_then_cuts() -> None:
    limiter = EventLimiter(rate=0.001, burst=3, abuse_limit=2)
    verdicts = [limiter.check() for _ in range(6)]
    assert verdicts == [Verdict.ALLOW] * 3 + [Verdict.REFUSE] * 2 + [Verdict.CUT]
    assert {EventLimiter(rate=0, burst=1, abuse_limit=1).check() for _ in range(100)} == {Verdict.ALLOW}
    never_cut = EventLimiter(rate=0.001, burst=1, abuse_limit=0)
    assert [never_cut.check() for _ in range(50)][1:] == [Verdict.REFUSE] * 49


def test_address_limiter_per_address_and_per_ipv6_block() -> None:
    limiter = AddressLimiter(rate=0.001, burst=2, max_addresses=100)
    assert [limiter.allow("198.51.100.1") for _ in range(2)] == [None, None]
    wait = limiter.allow("198.51.100.1")
    assert wait is not None and wait > 0
    assert limiter.allow("::ffff:198.51.100.1") is not None  # the same host, IPv4-mapped
    assert limiter.allow("198.51.100.2") is None
    assert limiter.allow("2001:db8:1:2::1") is None and limiter.allow("2001:db8:1:2::ffff") is None
    assert limiter.allow("2001:db8:1:2:abcd::7") is not None  # same /64
    assert limiter.allow("2001:db8:1:3::1") is None
    assert AddressLimiter(rate=0, burst=1, max_addresses=100).allow("198.51.100.1") is None


def test_address_table_stays_bounded_under_a_flood_of_addresses() -> None:
    limiter = AddressLimiter(rate=0.001, burst=5, max_addresses=1000)
    for i in range(50_000):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(limiter) <= 1000


# On a live gateway.

async def test_event_flood_is_refused_then_cut_and_others_keep_being_served(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(event_rate=0.1, event_burst=5, event_abuse_limit=10, event_abuse_window=1)
    async with connected(gateway.url, auth={"token": token("bob")}) as bystander, \
            connected(gateway.url, auth={"token": token("mallory")}) as flooder:
        acks = [await flooder.call("price:subscribe", [BTC]) for _ in range(6)]
        assert [a["ok"] for a in acks] == [True] * 5 + [False]
        assert acks[-1]["error"] == {"code": "RATE_LIMITED", "message": "too many events; slow down"}
        # Keep flooding without waiting for acks: past the abuse limit, for longer than the abuse
        # window, the connection ends.
        answers: list[Any] = []

        async def flooded() -> bool:
            if flooder.client.connected:
                await flooder.client.emit("price:subscribe", [BTC], callback=lambda *a: answers.append(a[0]))
            return "disconnect" in flooder.names()

        await eventually(flooded, timeout=15, interval=0.05)
        assert flooder.received("session:closed") == [
            {"code": "RATE_LIMITED", "message": "too many events for too long; connection closed"}]
        assert flooder.names()[-2:] == ["session:closed", "disconnect"]
        assert answers and {a["error"]["code"] for a in answers} == {"RATE_LIMITED"}
        assert (await bystander.call("price:subscribe", [BTC]))["ok"] is True
    samples = await scrape(gateway.url)
    assert sample(samples, "realtime_client_events_total", event="price:subscribe", code="RATE_LIMITED") \
        >= 1 + len(answers)
    assert sample(samples, "realtime_sessions_ended_total", code="RATE_LIMITED") == 1


async def test_connection_rate_per_address_is_refused_at_the_handshake(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(connect_rate=0.01, connect_burst=3)
    handshake = gateway.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        # Polling then upgrade: only the handshake counts, not the upgrade or the polls.
        async with connected(gateway.url, auth={"token": token("alice")}, transports=["polling", "websocket"]) as a, \
                connected(gateway.url, auth={"token": token("alice")}, transports=["polling", "websocket"]):
            await eventually(lambda: a.client.transport() == "websocket", timeout=10)
            async with http.get(handshake) as response:
                assert response.status == 200
            async with http.get(handshake) as response:
                assert response.status == 429
                assert int(response.headers["Retry-After"]) >= 1
                body = await response.json()
                assert body["error"]["code"] == "TOO_MANY_CONNECTIONS" and "retry later" in body["error"]["message"]
            refused = socketio.AsyncClient(reconnection=False)
            try:
                await refused.connect(gateway.url, auth={"token": token("alice")}, transports=["websocket"],
                                      wait_timeout=10)
                raise AssertionError("a connection past the address's rate was accepted")
            except socketio.exceptions.ConnectionError:
                pass
            finally:
                await refused.disconnect()
            # Connections already open are not affected.
            assert (await a.call("price:subscribe", [BTC]))["ok"] is True
        # Another client behind the trusted proxy (127.0.0.1) has its own budget.
        async with http.get(handshake, headers={"X-Forwarded-For": "203.0.113.7"}) as response:
            assert response.status == 200
    assert sample(await scrape(gateway.url), "realtime_connect_rate_limited_total") == 2


async def test_oversized_message_cuts_only_that_client(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(max_message_bytes=16384)
    async with connected(gateway.url, auth={"token": token("bob")}) as bystander:
        for transports in (["websocket"], ["polling"]):
            async with connected(gateway.url, auth={"token": token("mallory")}, transports=transports) as big:
                await big.client.emit("price:subscribe", ["x" * 20_000])
                await big.wait_for("disconnect", timeout=15)
            assert (await bystander.call("price:subscribe", [BTC]))["ok"] is True
        # Just below the bound is an ordinary bad request.
        ack = await bystander.call("price:subscribe", ["x" * 16_000])
        assert ack["error"]["code"] == "BAD_REQUEST"
    async with connected(gateway.url, auth={"token": token("carol")}) as newcomer:
        assert (await newcomer.call("price:subscribe", [BTC]))["ok"] is True


async def test_default_message_bound_is_64_kib(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway()
    async with connected(gateway.url, auth={"token": token("mallory")}) as big:
        ack = await big.call("price:subscribe", ["x" * 60_000])
        assert ack["error"]["code"] == "BAD_REQUEST"
        await big.client.emit("price:subscribe", ["x" * 70_000])
        await big.wait_for("disconnect", timeout=15)
