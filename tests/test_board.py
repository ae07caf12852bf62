"""The price board at GET /, in Debian's headless chromium driven by playwright-core (tests/js/board.mjs)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest

from tests.support import (
    ROOT,
    GatewayFactory,
    InProcessFactory,
    InProcessGateway,
    RedisServer,
    eventually,
    free_port,
    gateway_env,
    http_json,
    node_session,
    publish,
    served_on_redis,
    ticking,
)
from tests.support.books import BookFeed, Exchange

ARTIFACTS = ROOT / "test-artifacts"
# The test catalog (tests.support.ASSETS): name -> decimals, and a price level for each.
DECIMALS = {"BTC_USDC_PERP": 4, "ETH_USDC_PERP": 4, "SOL_USDC_PERP": 2}
LEVEL = {"BTC_USDC_PERP": 958_500_000, "ETH_USDC_PERP": 36_091_469, "SOL_USDC_PERP": 23_980}
SPREAD = {"BTC_USDC_PERP": 96_310, "ETH_USDC_PERP": 3_610, "SOL_USDC_PERP": 3}


def bid(asset: str, seq: int) -> int:
    return LEVEL[asset] + 7 * seq if seq % 2 else LEVEL[asset] - 5 * seq


def shown(value: int, decimals: int) -> str:
    """How the page must render an integer price: exact, grouped, with the asset's decimals."""
    whole, fraction = divmod(value, 10**decimals)
    return f"{whole:,}.{fraction:0{decimals}d}" if decimals else f"{whole:,}"


def every_asset(seq: int) -> list[dict[str, Any]]:
    """A tick of every asset, seq rising across restarts."""
    return [{"asset": a, "bid": bid(a, seq), "ask": bid(a, seq) + SPREAD[a], "seq": seq} for a in DECIMALS]


def check_rows(line: dict[str, Any]) -> None:
    """Every row renders the tick of the seq it shows, with the asset's decimals."""
    assert [row["asset"] for row in line["rows"]] == list(DECIMALS)
    for row in line["rows"]:
        asset, seq, places = row["asset"], row["seq"], DECIMALS[row["asset"]]
        assert seq > 0, row
        assert row["bid"] == shown(bid(asset, seq), places), row
        assert row["ask"] == shown(bid(asset, seq) + SPREAD[asset], places), row
        assert row["spread"] == shown(SPREAD[asset], places), row
        assert row["age"].endswith(" s"), row


@pytest.mark.slow
@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_board_in_chromium(start_process: GatewayFactory, redis_server: RedisServer, serializer: str) -> None:
    # Dev mode (no JWT key, asked for with Redis): the page gets its tokens from the dev token route,
    # and a restarted gateway has a new secret, so reconnecting needs a fresh one.
    suffix = str(free_port())
    gateway = start_process(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                            manager_channel=f"socketio-{suffix}", jwt_secret=None, dev=True,
                            serializer=serializer)
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {"url": gateway.url + "/", "screenshot": str(ARTIFACTS / f"board-{serializer}.png"),
            "restart": True, "toggle": serializer == "json"}
    async with ticking(gateway, every_asset, 0.15), node_session("board.mjs", plan) as browser:
        filled = await browser.until("filled", timeout=60)
        assert filled["state"] == "connected" and filled["instance"]
        check_rows(filled)

        changed = await browser.until("changed")
        check_rows(changed)
        before = {row["asset"]: row["seq"] for row in filled["rows"]}
        assert all(row["seq"] > before[row["asset"]] for row in changed["rows"])

        if plan["toggle"]:
            paused = await browser.until("paused")
            row = next(r for r in paused["rows"] if r["asset"] == paused["asset"])
            assert not row["live"] and row["seq"] == paused["before"]
            resumed = await browser.until("resumed")
            assert all(r["live"] for r in resumed["rows"])

        restart = await browser.until("restart")
        await asyncio.to_thread(gateway.stop)
        await browser.send({"step": "stopped"})
        await browser.until("reconnecting")
        await asyncio.to_thread(gateway.start)
        await browser.send({"step": "started"})
        reconnected = await browser.until("reconnected", timeout=60)
        assert reconnected["state"] == "connected" and reconnected["instance"] != restart["instance"]
        check_rows(reconnected)
        await browser.until("done")
    errors = [line for line in browser.lines if line["type"] == "pageerror"]
    assert errors == []
    assert (ARTIFACTS / f"board-{serializer}.png").stat().st_size > 10_000


@pytest.mark.slow
async def test_board_rate_selector_asks_for_a_max_rate(start_gateway: InProcessFactory,
                                                       redis_server: RedisServer) -> None:
    # Issue 23: the selector's maxRate is granted (shown on it) and rows then move at most that often.
    gateway = await served_on_redis(start_gateway, redis_server, jwt_secret=None, dev=True)
    plan = {"url": gateway.url + "/", "rate": 1, "rateMs": 4000}
    async with ticking(gateway, every_asset, 0.05), node_session("board.mjs", plan) as browser:
        rated = await browser.until("rated", timeout=60)
        await browser.until("unrated")
        await browser.until("done")
    assert rated["granted"] == 1
    for asset, changes in rated["changes"].items():
        # 4 s at 1 per second (the first may go at once), against ~20 ticks per second published.
        assert 1 <= changes <= 4 + 2, (asset, rated)
        assert rated["end"][asset] - rated["start"][asset] > changes  # seq jumped: newer ticks were skipped
    assert [line for line in browser.lines if line["type"] == "pageerror"] == []


@pytest.mark.slow
async def test_board_shows_a_stale_row_and_a_halted_one(start_gateway: InProcessFactory,
                                                        redis_server: RedisServer) -> None:
    # SOL's catalog entry makes it stale after 1 s without a tick; the feed stops sending it, then resumes.
    suffix = str(free_port())
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", jwt_secret=None, dev=True,
                                  assets="BTC_USDC_PERP:4,ETH_USDC_PERP:4,SOL_USDC_PERP:2:1")
    sol_quiet = False

    def batch(seq: int) -> list[dict[str, Any]]:
        return [t for t in every_asset(seq) if not (sol_quiet and t["asset"] == "SOL_USDC_PERP")]

    ARTIFACTS.mkdir(exist_ok=True)
    plan = {"url": gateway.url + "/", "screenshot": str(ARTIFACTS / "board-status.png"), "stale": "SOL_USDC_PERP",
            "halt": "ETH_USDC_PERP"}
    async with ticking(gateway, batch, 0.15), node_session("board.mjs", plan) as browser:
        check_rows(await browser.until("filled", timeout=60))
        await browser.until("changed")
        sol_quiet = True
        stale = await browser.until("stale")
        rows = {row["asset"]: row for row in stale["rows"]}
        assert rows["SOL_USDC_PERP"]["status"] == "stale" and rows["SOL_USDC_PERP"]["badge"] == "Stale"
        assert rows["SOL_USDC_PERP"]["struck"] == "line-through"
        assert all(rows[a]["status"] == "live" and rows[a]["badge"] == "" and rows[a]["struck"] == "none"
                   for a in ("BTC_USDC_PERP", "ETH_USDC_PERP"))
        check_rows(stale)  # the last price stays readable, flagged
        sol_quiet = False
        await browser.send({"step": "revive"})
        revived = await browser.until("revived")
        assert {row["asset"]: row["status"] for row in revived["rows"]}["SOL_USDC_PERP"] == "live"
        await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"],
                      {"asset": "ETH_USDC_PERP", "status": "halted"})
        halted = {row["asset"]: row for row in (await browser.until("halted"))["rows"]}
        assert halted["ETH_USDC_PERP"]["badge"] == "Halted" and halted["ETH_USDC_PERP"]["struck"] == "line-through"
        assert halted["BTC_USDC_PERP"]["status"] == "live"
        await browser.until("done")
    assert [line for line in browser.lines if line["type"] == "pageerror"] == []
    assert (ARTIFACTS / "board-status-stale.png").stat().st_size > 10_000


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## JavaScript client", 1)[1]
    match = re.search(r"```js\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README: no js block under 'JavaScript client'"
    return match.group(1)


async def test_readme_javascript_example(start_process: GatewayFactory, redis_server: RedisServer) -> None:
    script = (ROOT / "tests" / "js" / "example.mjs").read_text()
    assert readme_example() == script.split("// README begin\n", 1)[1].split("// README end\n", 1)[0]

    suffix = str(free_port())
    gateway = start_process(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                            manager_channel=f"socketio-{suffix}", jwt_secret=None, dev=True)
    async with ticking(gateway, every_asset, 0.15), node_session("example.mjs", {"url": gateway.url}) as client:
        seen = [(await client.until("render"))["update"] for _ in range(6)]
        # A restarted gateway in dev mode signs with a new secret: only a fresh token gets back in.
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(gateway.start)
        restarted = int(time.time() * 1000)
        while True:
            update = (await client.until("render", timeout=60))["update"]
            seen.append(update)
            if update["ts"] >= restarted:
                break
    assert {u["asset"] for u in seen} == {"BTC_USDC_PERP", "ETH_USDC_PERP"}
    for asset in ("BTC_USDC_PERP", "ETH_USDC_PERP"):
        seqs = [u["seq"] for u in seen if u["asset"] == asset]
        assert seqs == sorted(set(seqs))
        # The example's watchlist asks maxRate 2 of a feed ticking every 0.15 s: after the ack's snapshot,
        # each rendered tick is the newest of its half second, never the next tick.
        stamps = [u["ts"] for u in seen[:6] if u["asset"] == asset][1:]
        assert all(b - a >= 300 for a, b in itertools.pairwise(stamps)), stamps


async def refreshes(gateway: InProcessGateway) -> int:
    """Successful `auth:refresh` acks, from the gateway's own metrics."""
    _, text = await http_json(gateway.url + "/metrics")
    found = re.search(r'^realtime_client_events_total\{(?=[^}]*code="ok")(?=[^}]*event="auth:refresh")[^}]*\} (\S+)$',
                      text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


@pytest.mark.slow
async def test_clients_refresh_their_tokens_on_auth_expiring(start_gateway: InProcessFactory) -> None:
    # Dev tokens live 900 s (+10 s leeway): with a 907 s notice, `auth:expiring`
    # comes 3 s after every connect or refresh, and clients that refresh stay.
    gateway = await start_gateway(jwt_secret=None, auth_expiry_notice=907, simulated_rate=5)
    # One client at a time, so each must refresh for the count to rise.
    async with node_session("example.mjs", {"url": gateway.url}) as example:
        await example.until("render")
        await eventually(lambda: _at_least(refreshes(gateway), 2), timeout=60)
        await example.until("render")  # still connected and receiving
    async with node_session("board.mjs", {"url": gateway.url + "/", "hold": True}) as browser:
        await browser.until("holding", timeout=60)
        await eventually(lambda: _at_least(refreshes(gateway), 4), timeout=60)
        await browser.send({"step": "release"})
        held = await browser.until("held")
        await browser.until("done")
    assert held["state"] == "connected"


async def _at_least(count: Any, minimum: int) -> bool:
    return bool(await count >= minimum)


async def test_dev_token_route_only_without_a_jwt_key(start_gateway: InProcessFactory) -> None:
    dev = await start_gateway(jwt_secret=None)
    status, body = await http_json(dev.url + "/board/token")
    assert status == 200 and body["token"].count(".") == 2
    keyed = await start_gateway()
    status, _ = await http_json(keyed.url + "/board/token")
    assert status == 404
    status, page = await http_json(keyed.url + "/")
    assert status == 200 and '"tokenUrl": null' in page
    status, _ = await http_json(keyed.url + "/board/socket.io.js")
    assert status == 200


def test_missing_client_bundle_stops_start_up_with_one_line(tmp_path: Any) -> None:
    port = free_port()
    process = subprocess.run([sys.executable, "-m", "realtime", "serve"], cwd=ROOT, capture_output=True, text=True,
                             env=gateway_env(port, client_bundle_dir=tmp_path), timeout=60, check=False)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"realtime: configuration error: REALTIME_CLIENT_BUNDLE_DIR (--client-bundle-dir): {tmp_path}/socket.io.min.js "
        "does not exist; point it at node_modules/socket.io-client/dist"]


@pytest.mark.slow
async def test_board_shows_the_selected_assets_book(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    # The first asset's book at load, then another's after a click on its row: best levels first, each with
    # a size bar, exactly the feed's top 10 at the seq shown.
    suffix = str(free_port())
    gateway = await start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", jwt_secret=None, dev=True)
    feeds = {"BTC_USDC_PERP": BookFeed("BTC_USDC_PERP", seed=41),
             "ETH_USDC_PERP": BookFeed("ETH_USDC_PERP", seed=42, mid=36_000_000, step=1_000)}

    async def send(messages: list[dict[str, Any]]) -> None:
        await publish(redis_server.url, f"prices-{suffix}", *messages)

    exchange = Exchange(send, feeds)

    def moves(n: int) -> list[dict[str, Any]]:
        return [*every_asset(n), *(feed.delta(2) for feed in feeds.values())]

    ARTIFACTS.mkdir(exist_ok=True)
    plan = {"url": gateway.url + "/", "book": list(feeds), "screenshot": str(ARTIFACTS / "board.png")}
    async with exchange.answering(redis_server.url, f"prices-{suffix}"), \
            node_session("board.mjs", plan) as browser:
        await exchange.send(lambda: [feed.snapshot() for feed in feeds.values()])

        async def tick() -> None:
            for n in itertools.count(1):
                await exchange.send(functools.partial(moves, n))
                await asyncio.sleep(0.15)  # pacing the feed

        ticker = asyncio.create_task(tick())
        try:
            shown = [await browser.until("book", timeout=60) for _ in feeds]
        finally:
            ticker.cancel()
    for line, asset in zip(shown, feeds, strict=True):
        assert line["asset"] == asset and line["status"] == "live"
        bids, asks = feeds[asset].view(line["seq"], 10)
        assert [[price, qty] for price, qty, _ in line["bids"]] == bids
        assert [[price, qty] for price, qty, _ in line["asks"]] == asks
        levels = line["bids"] + line["asks"]
        largest = max(float(qty) for _, qty, _ in levels)
        for _, qty, width in levels:
            assert abs(width - 100 * float(qty) / largest) < 0.1


async def test_board_shows_the_selected_assets_tape_and_chart(start_gateway: GatewayFactory) -> None:
    # Embedded mode: the simulator makes a trade with each tick. The first asset's tape and candle chart at
    # load, then another's after a click on its row; the chart is lightweight-charts, drawn on canvases.
    gateway = await start_gateway(jwt_secret=None, dev=True, simulated_rate=4)
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {"url": gateway.url + "/", "market": ["BTC_USDC_PERP", "ETH_USDC_PERP"],
            "screenshot": str(ARTIFACTS / "board.png")}
    async with node_session("board.mjs", plan) as browser:
        for asset in plan["market"]:
            shown = await browser.until("market", timeout=60)
            assert shown["asset"] == asset and shown["chart"] == "ready" and shown["canvases"] >= 1
            assert len(shown["tape"]) >= 3 and all(row["side"] in ("buy", "sell") for row in shown["tape"])
            ids = [int(row["id"]) for row in shown["tape"]]
            assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)  # newest first, each once
            assert all(Decimal(row["price"]) > 0 and Decimal(row["qty"]) > 0 for row in shown["tape"])
