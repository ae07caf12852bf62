"""Issue 23 for order books (SPEC §11): book updates of a throttled connection follow its rate and stay exact.

A real gateway on real Redis, the tests' exchange publishing book deltas at
about 100 a second per asset (`tests.support.books`), and node
socket.io-client sessions keeping books as the README shows
(tests/js/books.mjs): every book a client prints must be the feed's
top-`depth` view at that seq, and no client may see a `prevSeq` gap. Rates
are counted from the clients' arrival times on a loaded, shared machine:
each bound is the contract's plus a margin, and each is checked against an
unthrottled client of the same gateway fed the same deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import (
    BTC,
    ETH,
    InProcessFactory,
    NodeSession,
    RedisServer,
    eventually,
    node_session,
    of,
    publish,
    served_on_redis,
    token,
)
from tests.support.books import BookFeed, Exchange, check_lines, holds

pytestmark = pytest.mark.timing  # bounds on how often and how soon the pod delivers

BOOKS = [{"asset": BTC, "depth": 10}, {"asset": ETH, "depth": 20}]
PER_SECOND = 100  # deltas per second per asset


def feeds() -> dict[str, BookFeed]:
    return {BTC: BookFeed(BTC, seed=21), ETH: BookFeed(ETH, seed=22, mid=36_000_000, step=1_000)}


def final(books: dict[str, BookFeed]) -> dict[tuple[str, int], int]:
    return {(book["asset"], book["depth"]): books[book["asset"]].seq for book in BOOKS}


@contextlib.asynccontextmanager
async def exchange_for(start_gateway: InProcessFactory, redis_server: RedisServer
                       ) -> AsyncIterator[tuple[str, dict[str, BookFeed], Exchange]]:
    """A gateway whose books are live, and the exchange that feeds it (answering its resync requests)."""
    gateway = await served_on_redis(start_gateway, redis_server)
    channel = gateway.env["REALTIME_PRICE_CHANNEL"]
    books = feeds()

    async def send(messages: list[dict[str, Any]]) -> None:
        await publish(redis_server.url, channel, *messages)

    exchange = Exchange(send, books)
    async with exchange.answering(redis_server.url, channel):
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        yield gateway.url, books, exchange


@contextlib.asynccontextmanager
async def sessions(url: str, *plans: dict[str, Any]) -> AsyncIterator[list[NodeSession]]:
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(node_session("books.mjs", {"url": url, "books": BOOKS, **plan}))
                  for plan in plans]
        for session in opened:
            await session.until("subscribed")
        yield opened


@contextlib.asynccontextmanager
async def reading(clients: list[NodeSession]) -> AsyncIterator[None]:
    """Read every client's lines as they come while the block runs (a client whose pipe fills stops reading
    its socket, and would look throttled)."""
    async def drain(client: NodeSession) -> None:
        while True:
            await client.next(60)

    tasks = [asyncio.create_task(drain(client)) for client in clients]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def feed_for(exchange: Exchange, seconds: float) -> None:
    """Deltas of every asset at PER_SECOND, then one that changes every top view."""
    await exchange.burst(int(seconds * PER_SECOND / 2), per_batch=2, every=2 / PER_SECOND)


def updates(lines: list[dict[str, Any]], asset: str, since: int = 0, until: int | None = None) -> list[int]:
    """Arrival times (ms) of the updates of `asset`'s book a client applied between two of its own times."""
    return [line["t"] for line in of(lines, "book")
            if line["asset"] == asset and since <= line["t"] and (until is None or line["t"] < until)]


def exact(client: NodeSession, books: dict[str, BookFeed]) -> None:
    assert not of(client.lines, "gap"), of(client.lines, "gap")[:2]
    check_lines(client.lines, books)


def rate_bound(times: list[int], max_rate: float, seconds: float) -> None:
    """At most `max_rate` a second (the first at once, the last of the burst within 1/max_rate: one more),
    and spaced by about 1/max_rate (arrival jitter aside)."""
    assert 2 <= len(times) <= max_rate * seconds + 2, (len(times), seconds)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] >= 1000 / max_rate * 0.8, gaps


async def test_a_throttled_connections_books_follow_its_rate_and_stay_exact(
        start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    async with exchange_for(start_gateway, redis_server) as (url, books, exchange), sessions(
            url,
            {"token": token("fast")},
            {"token": token("watchlist"), "calls": [["price:subscribe", {"assets": [BTC, ETH], "maxRate": 2}]]},
            # No price subscription: the books follow the token's claim.
            {"token": token("phone", max_rate=2)},
    ) as clients:
        fast, watchlist, phone = clients
        started = max(client.lines[-1]["t"] for client in clients)
        async with reading(clients):
            await feed_for(exchange, 4)
            await eventually(lambda: all(holds(final(books))(client.lines) for client in clients), timeout=30)
    [ack] = of(watchlist.lines, "ack")
    assert ack["ack"]["maxRate"] == 2, ack
    seconds = (max(client.lines[-1]["t"] for client in clients) - started) / 1000
    for asset in (BTC, ETH):
        # The unthrottled client gets an update per REALTIME_BOOK_INTERVAL (100 ms) while the book moves.
        assert len(updates(fast.lines, asset, started)) >= 4 * seconds, len(updates(fast.lines, asset, started))
        for client in (watchlist, phone):
            rate_bound(updates(client.lines, asset, started), 2, seconds)
    for client in clients:
        exact(client, books)
    # Each throttled update held every level changed since its prevSeq: many feed messages merged.
    assert max(line["seq"] - line["prevSeq"] for line in of(watchlist.lines, "book")) >= 20


async def test_price_rate_moves_a_book_between_rates_without_a_gap(start_gateway: InProcessFactory,
                                                                   redis_server: RedisServer) -> None:
    async with exchange_for(start_gateway, redis_server) as (url, books, exchange), sessions(
            url,
            {"token": token("fast")},  # the unthrottled rooms have members: a move there gets a snapshot
            {"token": token("steady"), "calls": [["price:subscribe", {"assets": [BTC, ETH], "maxRate": 2}]]},
            {"token": token("mover"), "calls": [["price:subscribe", {"assets": [BTC, ETH], "maxRate": 2}]]},
    ) as clients:
        mover = clients[2]
        phases: list[tuple[float | None, int, int]] = []  # (maxRate, from, to) in the mover's times
        async with reading(clients):
            feeding = asyncio.create_task(feed_for(exchange, 12))
            try:
                # Into the unthrottled rooms, then a rate room nobody is in, then back beside `steady`.
                for max_rate in (None, 1, 2):
                    await asyncio.sleep(2.5)  # a phase of the scenario, not a wait for something
                    before = len(of(mover.lines, "ack"))
                    await mover.send({"cmd": "emit", "event": "price:rate", "payload": {"maxRate": max_rate}})
                    await eventually(lambda: len(of(mover.lines, "ack")) > before, timeout=20)  # noqa: B023
                    ack = of(mover.lines, "ack")[-1]
                    assert ack["ack"]["ok"] and ack["ack"]["maxRate"] == max_rate, ack
                    phases.append((max_rate, ack["t"], 0))
                    if len(phases) > 1:
                        phases[-2] = (phases[-2][0], phases[-2][1], ack["t"])
                await feeding
            finally:
                feeding.cancel()
            await eventually(lambda: all(holds(final(books))(client.lines) for client in clients), timeout=30)
    end = mover.lines[-1]["t"]
    phases[-1] = (phases[-1][0], phases[-1][1], end)
    for client in clients:
        exact(client, books)
    events = [line for line in of(mover.lines, "view") if line["via"] == "event"]
    assert events, "the move into rooms with members came with a book:snapshot"
    for max_rate, since, until in phases[:2]:
        seconds = (until - since) / 1000
        for asset in (BTC, ETH):
            times = updates(mover.lines, asset, since + 200, until)  # after the move's own snapshot
            if max_rate is None:
                assert len(times) >= 4 * seconds * 0.8, (len(times), seconds)
            else:
                rate_bound(times, max_rate, seconds)


async def test_a_recovered_session_keeps_its_books_rate(start_gateway: InProcessFactory,
                                                        redis_server: RedisServer) -> None:
    async with exchange_for(start_gateway, redis_server) as (url, books, exchange), sessions(
            url, {"token": token("phone"), "calls": [["price:subscribe", {"assets": [BTC, ETH], "maxRate": 2}]]},
    ) as [phone]:
        await phone.send({"cmd": "drop"})
        await phone.until("disconnect")
        await exchange.burst(3, every=0.05)  # changes it misses while it is away
        connect = await phone.until("connect")
        assert connect["recovered"], connect
        async with reading([phone]):
            await feed_for(exchange, 4)
            await eventually(lambda: holds(final(books))(phone.lines), timeout=30)
    after = phone.lines[phone.lines.index(connect) + 1:]
    for book in BOOKS:
        mine = [line for line in after if line["type"] in ("view", "book") and line["asset"] == book["asset"]]
        assert mine[0]["type"] == "view" and mine[0]["via"] == "event", mine[:2]  # the snapshot, first
        times = [line["t"] for line in mine[1:]]
        rate_bound(times, 2, (phone.lines[-1]["t"] - connect["t"]) / 1000)
    exact(phone, books)


async def test_a_books_rate_follows_its_price_subscription_in_and_out(start_gateway: InProcessFactory,
                                                                      redis_server: RedisServer) -> None:
    # A book without a price subscription of its asset gets every interval's update (no claim, no cap);
    # subscribing to the asset's prices at maxRate 1 slows it, unsubscribing speeds it up again.
    async with exchange_for(start_gateway, redis_server) as (url, books, exchange), sessions(
            url, {"token": token("trader")}) as [trader]:
        async with reading([trader]):
            feeding = asyncio.create_task(feed_for(exchange, 9))
            marks = []
            try:
                for event, payload in (("price:subscribe", {"assets": [BTC], "maxRate": 1}),
                                       ("price:unsubscribe", [BTC])):
                    await asyncio.sleep(3)  # a phase of the scenario, not a wait for something
                    before = len(of(trader.lines, "ack"))
                    await trader.send({"cmd": "emit", "event": event, "payload": payload})
                    await eventually(lambda: len(of(trader.lines, "ack")) > before, timeout=20)  # noqa: B023
                    assert of(trader.lines, "ack")[-1]["ack"]["ok"], of(trader.lines, "ack")[-1]
                    marks.append(of(trader.lines, "ack")[-1]["t"])
                await feeding
            finally:
                feeding.cancel()
            await eventually(lambda: holds(final(books))(trader.lines), timeout=30)
    slow, fast = updates(trader.lines, BTC, marks[0], marks[1]), updates(trader.lines, BTC, marks[1])
    rate_bound(slow, 1, (marks[1] - marks[0]) / 1000)
    assert len(fast) >= 4 * (trader.lines[-1]["t"] - marks[1]) / 1000 * 0.8, len(fast)
    # ETH's book never had a price subscription: every interval, throughout.
    assert len(updates(trader.lines, ETH, marks[0], marks[1])) >= 4 * (marks[1] - marks[0]) / 1000 * 0.8
    exact(trader, books)
