"""Order books (SPEC §9): exact on every pod and across reconnects, with the real socket.io-client.

The tests' feed (`tests.support.books`) changes a reference book at random
and answers the pods' resync requests; node clients (tests/js/books.mjs)
keep books as the README shows and print them after every update, and each
printed book must be the feed's top-`depth` view at that seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from realtime.books.book import OrderBook
from realtime.books.messages import BookOutcome, BookRefused, parse
from realtime.books.rooms import Room
from realtime.catalog import Catalog, parse_assets
from tests.support import (
    ASSETS,
    BTC,
    ETH,
    ROOT,
    ClusterFactory,
    Gateway,
    InProcessFactory,
    NodeSession,
    RedisServer,
    connected,
    eventually,
    node_session,
    of,
    publish,
    sample,
    scrape,
    served_on_redis,
    token,
)
from tests.support.books import BookFeed, Exchange, check_lines, holds, read_until

BOOKS = [{"asset": BTC, "depth": 10}, {"asset": ETH, "depth": 20}]


def feeds() -> dict[str, BookFeed]:
    return {BTC: BookFeed(BTC, seed=11), ETH: BookFeed(ETH, seed=12, mid=36_000_000, step=1_000)}


def exchange_of(gateway: Gateway, books: dict[str, BookFeed]) -> Exchange:
    async def send(messages: list[dict[str, Any]]) -> None:
        await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"], *messages)
    return Exchange(send, books)


@contextlib.asynccontextmanager
async def clients(urls: list[str], **plan: Any) -> AsyncIterator[list[NodeSession]]:
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(node_session("books.mjs", {"url": url, **plan})) for url in urls]
        for session in sessions:
            await session.until("subscribed")
        yield sessions


async def live(books: dict[str, BookFeed], urls: list[str]) -> None:
    """Wait until every pod holds every book live (its first snapshot heard), before clients come."""
    async def all_live() -> bool:
        for url in urls:
            samples = await scrape(url)
            if any(sample(samples, "realtime_book_live", asset=asset) != 1 for asset in books):
                return False
        return True
    await eventually(all_live, timeout=20)


def final(books: dict[str, BookFeed], wanted: list[dict[str, Any]] = BOOKS) -> dict[tuple[str, int], int]:
    return {(book["asset"], book["depth"]): books[book["asset"]].seq for book in wanted}


# The book, its views and the feed's messages, alone.

def test_a_book_keeps_exact_levels_and_deletes_on_zero() -> None:
    book = OrderBook(4)
    book.apply([(958_500_000, "1.5"), (958_400_000, "2")], [(958_600_000, "0.4")], 1, 0, replace=True)
    book.apply([(958_500_000, "0.000"), (958_550_000, "3")], [], 2, 0)
    assert book.bids.top(5) == [(958_550_000, "3"), (958_400_000, "2")]
    assert book.asks.top(1) == [(958_600_000, "0.4")] and book.seq == 2


def test_a_rooms_update_holds_only_the_levels_of_its_view_that_changed() -> None:
    book = OrderBook(2)
    book.apply([(p, "1") for p in range(100, 90, -1)], [(p, "1") for p in range(101, 111)], 1, 0, replace=True)
    room = Room(3)
    room.reset(book)
    assert room.view(2) == ([["1.00", "1"], ["0.99", "1"], ["0.98", "1"]],
                            [["1.01", "1"], ["1.02", "1"], ["1.03", "1"]])
    book.apply([(100, "0"), (97, "5"), (99, "2"), (99, "1")], [(104, "7")], 2, 0)  # 99 ends as it was
    # The view was 1.00 0.99 0.98 and is 0.99 0.98 0.97: 1.00 left, 0.97 entered; 1.04 is outside the asks'.
    assert room.advance(book) == ([["1.00", "0"], ["0.97", "5"]], [])
    assert room.seq == 2
    book.apply([], [(110, "3")], 3, 0)  # outside the view: nothing to send, the room stays at 2
    assert room.advance(book) is None and room.seq == 2


def test_feed_messages_are_validated() -> None:
    catalog = Catalog(parse_assets(ASSETS))
    message = parse({"type": "book", "asset": "btc_usdc_perp", "seq": 5, "prevSeq": 4,
                     "bids": [["95850.10", "1.250"]], "asks": [["95851", "0"]], "ts": 1}, catalog)
    assert (message.asset, message.bids, message.asks, message.snapshot) == (BTC, [(958_501_000, "1.250")],
                                                                              [(958_510_000, "0")], False)
    assert parse({"type": "book", "asset": BTC, "seq": 5, "snapshot": True}, catalog).snapshot
    for bad, outcome in [
        ({"asset": "NOPE", "seq": 1, "snapshot": True}, BookOutcome.UNKNOWN),
        ({"asset": BTC, "seq": 2}, BookOutcome.MALFORMED),  # neither prevSeq nor snapshot
        ({"asset": BTC, "seq": 2, "prevSeq": 1, "bids": [["1.000001", "1"]]}, BookOutcome.MALFORMED),  # decimals
        ({"asset": BTC, "seq": 2, "prevSeq": 1, "bids": [["1", "-1"]]}, BookOutcome.MALFORMED),
        ({"asset": BTC, "seq": 2, "prevSeq": 1, "asks": [["1", 1.5]]}, BookOutcome.MALFORMED),
        ({"asset": BTC, "seq": 2, "prevSeq": 1, "asks": {"1": "1"}}, BookOutcome.MALFORMED),
        ({"asset": BTC, "seq": -1, "snapshot": True}, BookOutcome.MALFORMED),
        ({"asset": BTC, "seq": 1, "snapshot": "yes"}, BookOutcome.MALFORMED),
    ]:
        try:
            parse({"type": "book", **bad}, catalog)
        except BookRefused as refused:
            assert refused.outcome is outcome, bad
        else:
            raise AssertionError(f"accepted {bad}")


# Two pods sharing Redis, node socket.io-client on each.

async def test_two_pods_keep_the_feeds_book_at_every_seq_through_a_burst(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(pods=2)
    books = feeds()
    exchange = exchange_of(cluster.pods[0], books)
    urls = [pod.url for pod in cluster.pods]
    async with exchange.answering(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"]):
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        await live(books, [pod.url for pod in cluster.pods])
        async with clients(urls, token=token("alice"), books=BOOKS) as sessions:
            deltas = await exchange.burst(40)
            for session in sessions:
                await read_until(session, holds(final(books)))
    for session in sessions:
        assert not of(session.lines, "gap")
        updates = check_lines(session.lines, books)
        # Conflated: far fewer updates than deltas (at most one per 100 ms per book), and at least a few;
        # an update's prevSeq..seq spans the feed messages it merged.
        assert 2 <= updates <= 2 * deltas // 5, updates
        assert max(line["seq"] - line["prevSeq"] for line in of(session.lines, "book")) > 1
        # The burst deleted levels and moved levels into and out of the views.
        changed = [change for line in of(session.lines, "book") for change in line["changed"]]
        assert any(qty == "0" for _, _, qty, _ in changed) and any(before is None for *_, before in changed)
    for pod in cluster.pods:
        samples = await scrape(pod.url)
        assert sample(samples, "realtime_book_levels_conflated_total", asset=BTC) > 0
        assert sample(samples, "realtime_book_updates_total", asset=BTC, depth="10") > 0
        assert sample(samples, "realtime_book_updates_total", asset=ETH, depth="20") > 0
        assert sample(samples, "realtime_book_messages_total", outcome="gap") == 0


async def test_a_gap_in_the_feed_resyncs_every_pod_and_clients_stay_exact(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(pods=2)
    books = feeds()
    exchange = exchange_of(cluster.pods[0], books)
    btc = books[BTC]
    async with exchange.answering(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"]):
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        await live(books, [pod.url for pod in cluster.pods])
        async with clients([pod.url for pod in cluster.pods], token=token("alice"), books=BOOKS) as sessions:
            await exchange.burst(5)
            for session in sessions:
                await read_until(session, holds(final(books)))
            # One delta the pods never hear: the next one's prevSeq does not follow.
            await exchange.send(lambda: [btc.missed(), btc.touch_top()][1:])
            for session in sessions:
                await read_until(session, lambda lines: [s["status"] for s in of(lines, "status")] == ["resyncing",
                                                                                                        "live"])
                await read_until(session, holds(final(books)))
            assert exchange.requests.count(BTC) >= 1
            await exchange.burst(5)
            for session in sessions:
                await read_until(session, holds(final(books)))
    for session in sessions:
        assert not of(session.lines, "gap")  # the gateway bridged it: the client never saw one
        check_lines(session.lines, books)
    for pod in cluster.pods:
        samples = await scrape(pod.url)
        assert sample(samples, "realtime_book_resyncs_total", asset=BTC) == 1
        assert sample(samples, "realtime_book_resyncs_total", asset=ETH) == 0
        assert sample(samples, "realtime_book_live", asset=BTC) == 1


async def test_a_recovered_client_gets_book_snapshot_before_any_update(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(pods=2)
    books = feeds()
    exchange = exchange_of(cluster.pods[0], books)
    async with exchange.answering(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"]):
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        await live(books, [pod.url for pod in cluster.pods])
        async with clients([cluster.url], token=token("alice"), books=BOOKS) as [session]:
            await exchange.burst(5)
            await read_until(session, holds(final(books)))
            for drop in range(2):
                await session.send({"cmd": "drop"})
                await session.until("disconnect")
                await exchange.burst(3, every=0.05)  # changes the client misses while it is away
                connect = await session.until("connect")
                assert connect["recovered"], connect
                await read_until(session, holds(final(books)))
                after = session.lines[session.lines.index(connect) + 1:]
                book_lines = [line for line in after if line["type"] in ("view", "book")]
                # Each book's snapshot event comes before any update of it.
                for book in BOOKS:
                    mine = [line for line in book_lines if line["asset"] == book["asset"]]
                    assert mine[0]["type"] == "view" and mine[0]["via"] == "event", (drop, mine[:2])
    assert not of(session.lines, "gap")
    check_lines(session.lines, books)
    recovered = [sample(await scrape(pod.url), "realtime_recoveries_total", outcome="recovered")
                 for pod in cluster.pods]
    assert sum(recovered) == 2


async def test_rights_delay_and_bad_payloads_are_refused_and_the_connection_lives_on(
        start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(pods=2)
    books = feeds()
    exchange = exchange_of(cluster.pods[0], books)
    calls = [
        ["book:subscribe", {"asset": BTC, "depth": 10}],  # the token allows ETH only
        ["book:snapshot", {"asset": BTC, "depth": 20}],
        ["book:subscribe", {"asset": "NOPE_USDC", "depth": 10}],
        ["book:subscribe", {"asset": ETH, "depth": 11}],
        ["book:subscribe", {"asset": ETH, "depth": "10"}],
        ["book:subscribe", {"asset": ETH}],
        ["book:subscribe", [ETH]],
        ["book:subscribe", ETH],
        ["book:subscribe", None],
        ["book:subscribe", {"asset": 5, "depth": 10}],
        ["book:unsubscribe", {"asset": ETH, "depth": True}],
    ]
    codes = ["FORBIDDEN", "FORBIDDEN", "UNKNOWN_ASSET", *["BAD_REQUEST"] * 8]
    async with exchange.answering(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"]):
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        await live(books, [pod.url for pod in cluster.pods])
        wanted = [{"asset": ETH, "depth": 10}]
        async with clients([pod.url for pod in cluster.pods], token=token("bob", assets=[ETH]), books=wanted,
                           calls=calls) as sessions:
            await exchange.burst(5)
            for session in sessions:
                await read_until(session, holds(final(books, wanted)))
                assert [line["ack"]["error"]["code"] for line in of(session.lines, "ack")] == codes
                check_lines(session.lines, books)
        delayed = [["book:subscribe", {"asset": ETH, "depth": 10}]]
        async with clients([cluster.url], token=token("carol", delay=900), calls=delayed) as [session]:
            [ack] = of(session.lines, "ack")
            assert ack["ack"]["error"]["code"] == "FORBIDDEN" and "real-time" in ack["ack"]["error"]["message"]


# The simulator (embedded mode) and `realtime feed`.

def plausible(line: dict[str, Any]) -> bool:
    bids = [float(price) for price, _ in line["bids"]]
    asks = [float(price) for price, _ in line["asks"]]
    return bids == sorted(bids, reverse=True) and asks == sorted(asks) and bool(bids) and bids[0] < asks[0]


async def test_the_embedded_simulator_moves_a_book_around_the_quote(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(simulated_rate=10)
    async with clients([gateway.url], token=token("alice"), books=BOOKS, calls=[["price:subscribe", [BTC]]]
                       ) as [session]:
        await read_until(session, lambda lines: len(of(lines, "book")) >= 10)
    [ack] = of(session.lines, "ack")
    price = ack["ack"]["prices"][0]
    for line in of(session.lines, "book"):
        assert plausible(line), line
        assert len(line["bids"]) == line["depth"] and len(line["asks"]) == line["depth"]
        for _side, _price, qty, before in line["changed"]:
            assert qty != before and (qty != "0" or before is not None), line
    btc = next(line for line in of(session.lines, "book") if line["asset"] == BTC)
    mid = (price["bid"] + price["ask"]) / 2 / 10 ** price["decimals"]
    assert abs(float(btc["bids"][0][0]) - mid) / mid < 0.01  # around the quote
    assert not of(session.lines, "gap")


async def test_realtime_feed_publishes_books_and_answers_resync_requests(start_gateway: InProcessFactory,
                                                                         redis_server: RedisServer) -> None:
    gateway = await served_on_redis(start_gateway, redis_server)
    channel = gateway.env["REALTIME_PRICE_CHANNEL"]
    feed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "feed", "--rate", "20", "--assets", ASSETS,
        "--redis-url", redis_server.url, "--price-channel", channel, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    listener = aioredis.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        async with clients([gateway.url], token=token("alice"), books=BOOKS) as [session]:
            await read_until(session, lambda lines: len(of(lines, "book")) >= 10)
            assert all(plausible(line) for line in of(session.lines, "book"))
            await pubsub.subscribe(channel)
            await publish(redis_server.url, f"{channel}:control", {"type": "book:resync", "asset": ETH})

            async def snapshot_of_eth() -> None:
                async for message in pubsub.listen():
                    data = json.loads(message["data"])
                    if data.get("type") == "book" and data.get("snapshot") and data["asset"] == ETH:
                        return
            await asyncio.wait_for(snapshot_of_eth(), 10)
            seen = len(of(session.lines, "book"))
            await read_until(session, lambda lines: len(of(lines, "book")) >= seen + 5)
        assert not of(session.lines, "gap")
    finally:
        feed.terminate()
        await feed.wait()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_the_readme_example_keeps_a_book(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    # tests/js/example.mjs is the README's code (tests/test_board.py checks): the book it renders after each
    # update is the feed's top 10, also across a gap the gateway bridges.
    gateway = await served_on_redis(start_gateway, redis_server, jwt_secret=None, dev=True)
    books = feeds()
    exchange = exchange_of(gateway, books)
    async with exchange.answering(redis_server.url, gateway.env["REALTIME_PRICE_CHANNEL"]), \
            node_session("example.mjs", {"url": gateway.url}) as example:
        await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
        await live(books, [gateway.url])
        await eventually(lambda: _subscribed(gateway), timeout=20)
        await exchange.burst(10)
        await read_until(example, lambda lines: any(line.get("seq") == books[BTC].seq for line in of(lines, "book")))
        btc = books[BTC]
        await exchange.send(lambda: [btc.missed(), btc.touch_top()][1:])
        await read_until(example, lambda lines: any(line.get("seq") == books[BTC].seq for line in of(lines, "book")))
    shown = of(example.lines, "book")
    assert len(shown) >= 2
    for line in shown:
        assert [line["bids"], line["asks"]] == list(books[BTC].view(line["seq"], 10)), line


async def _subscribed(gateway: Gateway) -> bool:
    samples = await scrape(gateway.url)
    return sample(samples, "realtime_client_events_total", event="book:subscribe", code="ok") >= 1


async def test_a_refreshed_token_that_drops_an_asset_leaves_its_books(start_gateway: InProcessFactory,
                                                                       redis_server: RedisServer) -> None:
    gateway = await served_on_redis(start_gateway, redis_server)
    books = feeds()
    exchange = exchange_of(gateway, books)
    await exchange.send(lambda: [feed.snapshot() for feed in books.values()])
    await live(books, [gateway.url])
    async with connected(gateway.url, auth={"token": token("dave", assets=[BTC, ETH])}) as dave:
        for asset in (BTC, ETH):
            ack = await dave.call("book:subscribe", {"asset": asset, "depth": 10})
            assert ack["ok"] and ack["seq"] == books[asset].seq, ack
        refreshed = await dave.call("auth:refresh", {"token": token("dave", assets=[ETH])})
        assert refreshed["ok"], refreshed
        # Both books change at once; ETH's update arrives, BTC's never does.
        await exchange.send(lambda: [books[BTC].touch_top(), books[ETH].touch_top()])
        [update] = await dave.wait_for("book:update", 1, timeout=10)
        assert update["asset"] == ETH and update["seq"] == books[ETH].seq
        again = await dave.call("book:subscribe", {"asset": BTC, "depth": 10})
        assert again["error"]["code"] == "FORBIDDEN"
        assert [u["asset"] for u in dave.received("book:update")] == [ETH]
