"""Order books on a Redis Cluster: each asset's book rides its own sharded channel (SPUBLISH), the pods'
resync requests the classic control channel; node clients on two pods stay exact through a burst, a gap
and a dropped transport."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime.backplane.connections import client
from tests.support import (
    BTC,
    ETH,
    Gateway,
    Nginx,
    NodeSession,
    free_port,
    launch,
    node_session,
    of,
    sample,
    scrape,
    token,
)
from tests.support.books import BookFeed, Exchange, check_lines, holds, read_until
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster

pytestmark = pytest.mark.slow  # a Redis Cluster, and pods behind nginx

__all__ = ["redis_cluster"]  # fixtures

BOOKS: list[dict[str, Any]] = [{"asset": BTC, "depth": 10}, {"asset": ETH, "depth": 20}]


class Pods:
    def __init__(self, nodes: RedisClusterNodes, gateways: list[Gateway], nginx: Nginx) -> None:
        self.nodes = nodes
        self.gateways = gateways
        self.nginx = nginx
        self.channel = gateways[0].env["REALTIME_PRICE_CHANNEL"]

    def exchange(self, feeds: dict[str, BookFeed]) -> Exchange:
        async def spublish(messages: list[dict[str, Any]]) -> None:
            redis = client(self.nodes.url, 2.0)
            try:
                for message in messages:
                    await redis.spublish(f"{self.channel}:{message['asset']}", json.dumps(message))
            finally:
                await redis.aclose()
        return Exchange(spublish, feeds)


@pytest.fixture
def pods(redis_cluster: RedisClusterNodes, tmp_path: Path) -> Iterator[Pods]:
    """Two `realtime serve` pods behind nginx, on the default engine (like `start_cluster`)."""
    suffix = str(free_port())
    gateways = [launch(tmp_path, redis_url=redis_cluster.url, price_channel=f"prices-{suffix}",
                       price_channels="per-asset", manager_channel=f"socketio-{suffix}",
                       instance_id=f"pod{i}-{suffix}") for i in range(2)]
    nginx = Nginx([g.port for g in gateways], tmp_path / f"nginx-{suffix}")
    nginx.start()
    yield Pods(redis_cluster, gateways, nginx)
    nginx.stop()
    for gateway in gateways:
        gateway.stop()


def feeds() -> dict[str, BookFeed]:
    return {BTC: BookFeed(BTC, seed=21), ETH: BookFeed(ETH, seed=22, mid=36_000_000, step=1_000)}


def final(books: dict[str, BookFeed]) -> dict[tuple[str, int], int]:
    return {(book["asset"], book["depth"]): books[book["asset"]].seq for book in BOOKS}


@contextlib.asynccontextmanager
async def clients(urls: list[str]) -> AsyncIterator[list[NodeSession]]:
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(node_session("books.mjs", {
            "url": url, "token": token("alice"), "books": BOOKS})) for url in urls]
        for session in sessions:
            await session.until("subscribed")
        yield sessions


async def test_books_on_a_redis_cluster_stay_exact_through_a_burst_and_a_gap(pods: Pods) -> None:
    books = feeds()
    exchange = pods.exchange(books)
    btc = books[BTC]
    async with exchange.answering(pods.nodes.url, pods.channel), \
            clients([g.url for g in pods.gateways]) as sessions:
        # Nobody published a snapshot: each pod asks for one when its first client subscribes.
        await exchange.burst(30)
        for session in sessions:
            await read_until(session, holds(final(books)))
        await exchange.send(lambda: [btc.missed(), btc.touch_top()][1:])
        for session in sessions:
            await read_until(session, lambda lines: [s["status"] for s in of(lines, "status") if s["asset"] == BTC
                                                     ][-2:] == ["resyncing", "live"])
        await exchange.burst(10)
        for session in sessions:
            await read_until(session, holds(final(books)))
    for session in sessions:
        assert not of(session.lines, "gap")
        assert check_lines(session.lines, books) >= 4
    for gateway in pods.gateways:
        samples = await scrape(gateway.url)
        # Once at the first subscriber (no snapshot yet), once for the gap.
        assert sample(samples, "realtime_book_resyncs_total", asset=BTC) == 2
        assert sample(samples, "realtime_book_levels_conflated_total", asset=BTC) > 0


async def test_a_recovered_client_on_a_redis_cluster_gets_book_snapshot_first(pods: Pods) -> None:
    books = feeds()
    exchange = pods.exchange(books)
    async with exchange.answering(pods.nodes.url, pods.channel), clients([pods.nginx.url]) as [session]:
        await exchange.burst(5)
        await read_until(session, holds(final(books)))
        await session.send({"cmd": "drop"})
        await session.until("disconnect")
        await exchange.burst(3, every=0.05)
        connect = await session.until("connect")
        assert connect["recovered"], connect
        await read_until(session, holds(final(books)))
        after = [line for line in session.lines[session.lines.index(connect) + 1:] if line["type"] in ("view", "book")]
        for book in BOOKS:
            mine = [line for line in after if line["asset"] == book["asset"]]
            assert mine[0]["type"] == "view" and mine[0]["via"] == "event", mine[:2]
    assert not of(session.lines, "gap")
    check_lines(session.lines, books)
