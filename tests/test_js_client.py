"""The typed client package (clients/js, `@realtime/client`, issue #25).

Its type checks (`tsc --noEmit` over example code that uses every event, and
a file of `@ts-expect-error` lines that must each fail to compile) and its
node unit tests (randomized scenarios against scripted event streams) run
here, so `scripts/test` fails when they do. End to end, its helpers run in
node against two real pods behind nginx: every book view a helper emits is
the feed's top-`depth` view at that `seq`, every state it emits the state
the back end wrote at that `version`, every price one the feed sent, through
a burst, a dropped transport (recovered, maybe on the other pod) and a gap
in the feed; every tape the trades helper holds a run of the feed's trades
and every candle the candles helper holds one the pods built, ending equal
to what a new subscriber is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

from tests.support import BTC, ETH, ROOT, ClusterFactory, InProcessFactory, NodeSession, feed, node_session, of, token
from tests.support.books import BookFeed, Exchange, check_lines, holds, read_until
from tests.support.channels import write_state
from tests.support.trades import acks, bars, client, event_of, trade

PACKAGE = ROOT / "clients" / "js"
ARTIFACTS = ROOT / "test-artifacts"
BOOKS: list[dict[str, Any]] = [{"asset": BTC, "depth": 10}, {"asset": ETH, "depth": 20}]
KEYS = [f"p{i}" for i in range(8)]


def npm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", "--silent", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=300)


def test_the_types_check_every_event_and_refuse_wrong_payloads() -> None:
    # tsc --noEmit over src/ and examples/: every-event.ts must compile, and each @ts-expect-error line of
    # wrong-payloads.ts must be an error (an unused one fails the check).
    done = npm("run", "check")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert (PACKAGE / "examples" / "wrong-payloads.ts").read_text().count("@ts-expect-error") >= 20


def test_the_helpers_node_unit_tests_pass() -> None:
    done = subprocess.run(["node", "--test", *sorted(str(p) for p in (PACKAGE / "test").glob("*.test.mjs"))],
                          cwd=PACKAGE, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout[-2000:]


def test_the_package_builds_to_esm_and_declarations() -> None:
    done = npm("run", "build")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for name in ("index.js", "index.d.ts", "book.js", "protocol.d.ts"):
        assert (PACKAGE / "dist" / name).is_file(), name
    assert "export function book(" not in (PACKAGE / "dist" / "index.js").read_text()  # re-exports only
    assert "from \"./book.js\"" in (PACKAGE / "dist" / "index.js").read_text()


# End to end, with the real gateway.


def model_apply(items: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The ops' meaning, written apart from the gateway's and the package's code."""
    for op in ops:
        if op["op"] == "set":
            items[op["key"]] = copy.deepcopy(op["value"])
        elif op["op"] == "merge":
            items[op["key"]] = {**items.get(op["key"], {}), **op["changes"]}
        else:
            items.pop(op["key"], None)


class Backend:
    """Writes alice's positions through the pods in turn, and keeps the state at each version."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.rng = random.Random(25)
        self.items: dict[str, Any] = {}
        self.versions: dict[int, dict[str, Any]] = {0: {}}
        self.version = 0

    async def write(self, count: int) -> None:
        for _ in range(count):
            ops: list[dict[str, Any]] = []
            for _ in range(self.rng.randint(1, 3)):
                key = self.rng.choice(KEYS)
                kind = self.rng.choices(["set", "merge", "delete"], [3, 6, 2])[0]
                if kind == "set":
                    ops.append({"op": "set", "key": key, "value": {"qty": self.rng.randint(0, 3), "side": "long"}})
                elif kind == "merge":
                    ops.append({"op": "merge", "key": key, "changes": {"profit": self.rng.randint(0, 3)}})
                else:
                    ops.append({"op": "delete", "key": key})
            status, answer = await write_state(self.urls[self.version % len(self.urls)],
                                               {"user": "alice", "name": "positions", "ops": ops})
            assert status == 200, answer
            model_apply(self.items, ops)
            self.version += 1
            assert answer["version"] == self.version
            self.versions[self.version] = copy.deepcopy(self.items)


class Ticks:
    """Quote ticks with the feed's own seq, so every pod numbers them alike; each one sent, by asset and seq."""

    def __init__(self) -> None:
        self.seq = 0
        self.sent: dict[tuple[str, int], dict[str, Any]] = {}

    async def send(self, gateway: Any, count: int) -> None:
        messages = []
        for _ in range(count):
            self.seq += 1
            for n, asset in enumerate((BTC, ETH)):
                tick = {"asset": asset, "bid": 950_000_000 + self.seq * 10 + n, "ask": 960_000_000 + self.seq * 10,
                        "seq": self.seq}
                self.sent[asset, self.seq] = tick
                messages.append(tick)
        await feed(gateway, *messages)


def settled(books: dict[str, BookFeed], backend: Backend, ticks: Ticks) -> Any:
    """A `read_until` condition: every helper holds the newest book, state and price."""
    books_held = holds({(b["asset"], b["depth"]): books[b["asset"]].seq for b in BOOKS})

    def done(lines: list[dict[str, Any]]) -> bool:
        states = of(lines, "state")
        last_price = {line["asset"]: line["seq"] for line in of(lines, "price")}
        return (books_held(lines) and bool(states) and states[-1]["version"] == backend.version
                and all(last_price.get(asset) == ticks.seq for asset in (BTC, ETH)))
    return done


def recorded_all(books: dict[str, BookFeed], backend: Backend, ticks: Ticks) -> Any:
    """A `read_until` condition for the recorder: it saw the newest book, state and price."""
    def done(lines: list[dict[str, Any]]) -> bool:
        held: dict[Any, int] = {}
        for line in lines:
            if line["type"] != "record" or line["kind"] not in ("event", "ack"):
                continue
            payload = line["ack"] if line["kind"] == "ack" else line["args"][0]
            if isinstance(payload, dict) and "seq" in payload:
                held[payload["asset"], payload.get("depth")] = payload["seq"]
            elif isinstance(payload, dict) and "version" in payload:
                held["state"] = payload["version"]
        return (all(held.get((b["asset"], b["depth"])) == books[b["asset"]].seq for b in BOOKS)
                and held.get("state") == backend.version
                and all(held.get((asset, None)) == ticks.seq for asset in (BTC, ETH)))
    return done


def check(session: NodeSession, books: dict[str, BookFeed], backend: Backend, ticks: Ticks) -> None:
    """Every view each helper emitted equals the server's at its seq / version."""
    assert check_lines(session.lines, books) == 0  # the helper prints whole views ("view" lines) only
    views = [line for line in session.lines if line["type"] == "view"]
    assert len(views) > 20
    states = of(session.lines, "state")
    for line in states:
        assert line["items"] == backend.versions[line["version"]], line
    assert len(states) > 20
    for line in of(session.lines, "price"):
        sent = ticks.sent[line["asset"], line["seq"]]
        assert (line["bid"], line["ask"]) == (sent["bid"], sent["ask"]), line
    assert not of(session.lines, "error"), of(session.lines, "error")


RECORDED_PLAN: dict[str, Any] = {"token": token("alice"), "prices": [BTC, ETH], "books": BOOKS,
                                 "states": [{"name": "positions"}]}


def recording(recorder: NodeSession, books: dict[str, BookFeed], backend: Backend) -> dict[str, Any]:
    """The recorder's stream, with the reference views at each book seq and the state at each version it holds
    (clients/js/test/replay.test.mjs reads this)."""
    stream = [{k: v for k, v in line.items() if k != "type"} for line in recorder.lines if line["type"] == "record"]
    seqs: dict[str, set[int]] = {f"{b['asset']}:{b['depth']}": set() for b in BOOKS}
    versions: set[int] = set()
    for entry in stream:
        payload = entry["ack"] if entry["kind"] == "ack" else (entry.get("args") or [None])[0]
        if not isinstance(payload, dict):
            continue
        if "depth" in payload and "seq" in payload:
            seqs[f"{payload['asset']}:{payload['depth']}"].add(payload["seq"])
        if "version" in payload:
            versions.add(payload["version"])
    views = {key: {seq: list(books[key.split(":")[0]].view(seq, int(key.split(":")[1]))) for seq in sorted(held)}
             for key, held in seqs.items()}
    return {"plan": {k: v for k, v in RECORDED_PLAN.items() if k != "token"}, "books": views,
            "states": {v: backend.versions[v] for v in sorted(versions)}, "stream": stream}


@contextlib.asynccontextmanager
async def helpers(urls: list[str]) -> AsyncIterator[list[NodeSession]]:
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(node_session("companion.mjs", {
            "url": url, "token": token("alice"), "prices": [BTC, ETH], "books": BOOKS,
            "states": [{"name": "positions"}]})) for url in urls]
        for session in sessions:
            await session.until("ready")
        yield sessions


async def test_the_helpers_equal_the_gateway_on_two_pods_through_a_drop_and_a_feed_gap(
        start_cluster: ClusterFactory) -> None:
    # Updates every 10 ms, not 100: each round's deltas and its top-of-book change then reach the helpers
    # as updates of their own, conflated or not as the machine's speed has it, so the helpers apply many.
    cluster = start_cluster(pods=2, book_interval=10)
    books = {BTC: BookFeed(BTC, seed=31), ETH: BookFeed(ETH, seed=32, mid=36_000_000, step=1_000)}
    pod = cluster.pods[0]

    async def send(messages: list[dict[str, Any]]) -> None:
        await feed(pod, *messages)
    exchange = Exchange(send, books)
    backend = Backend([p.url for p in cluster.pods])
    ticks = Ticks()
    btc = books[BTC]
    async with exchange.answering(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"]):
        await exchange.send(lambda: [f.snapshot() for f in books.values()])
        await ticks.send(pod, 1)
        await backend.write(3)
        # One client on a pod, one through nginx (its reconnect may land on the other pod), and a recorder of
        # what a socket.io-client sees through nginx, replayed through the helpers afterwards.
        async with helpers([cluster.pods[1].url, cluster.url]) as sessions, \
                node_session("record.mjs", {"url": cluster.url, **RECORDED_PLAN}) as recorder:
            await recorder.until("ready")
            async def round_of_changes(batches: int) -> None:
                for _ in range(batches):
                    await exchange.burst(1, per_batch=8, every=0.01)
                    await backend.write(2)
                    await ticks.send(pod, 2)
                for session in sessions:
                    await read_until(session, settled(books, backend, ticks))

            await round_of_changes(6)
            # A dropped transport: the client recovers (same session) and misses nothing.
            dropped = sessions[1]
            for session in (dropped, recorder):
                await session.send({"cmd": "drop"})
            await dropped.until("disconnect")
            await exchange.burst(2, every=0.05)
            await backend.write(4)
            await ticks.send(pod, 3)
            connect = await dropped.until("connect")
            assert connect["recovered"], connect
            await round_of_changes(3)
            # A gap in the feed: every pod resyncs its book; the helpers follow without a gap of their own.
            await exchange.send(lambda: [btc.missed(), btc.touch_top()][1:])
            await round_of_changes(4)
            await read_until(recorder, recorded_all(books, backend, ticks))
    for session in sessions:
        check(session, books, backend, ticks)
        statuses = [line["status"] for line in of(session.lines, "book-status") if line["asset"] == BTC]
        assert statuses[0] == "live" and statuses[-1] == "live", statuses
        assert "resyncing" in statuses  # the feed's gap (and the drop) showed
    assert not of(sessions[0].lines, "gap")  # the gateway bridged the feed's gap: no client saw one
    # What the recorder saw, replayed through the helpers (as it came, and with updates lost at random).
    ARTIFACTS.mkdir(exist_ok=True)
    recorded = ARTIFACTS / "js-client-recorded.json"
    recorded.write_text(json.dumps(recording(recorder, books, backend)))
    done = await asyncio.to_thread(
        subprocess.run, ["node", "--test", str(PACKAGE / "test" / "replay.test.mjs")], cwd=PACKAGE,
        capture_output=True, text=True, timeout=300, env={**os.environ, "RECORDED": str(recorded)})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def tape_checks(lines: list[dict[str, Any]], sent: list[dict[str, Any]], last: int) -> list[dict[str, Any]]:
    """Every tape a trades helper printed is a run of the feed, at most `last` long; its trade events go forward in
    feed order, each once. The last tape."""
    feed_order = [event_of(m) for m in sent]
    where = {item["id"]: n for n, item in enumerate(feed_order)}
    tapes = of(lines, "tape")
    for line in tapes:
        kept = line["trades"]
        assert 0 < len(kept) <= last, line
        first = where[kept[0]["id"]]
        assert kept == feed_order[first:first + len(kept)], line
    positions = [where[line["id"]] for line in of(lines, "new-trade")]
    assert positions == sorted(set(positions)), positions
    return tapes[-1]["trades"]


def candle_checks(lines: list[dict[str, Any]], sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every candle a candles helper held is the bar of its second's first `n` trades, closed ones final and
    `t` ascending. The last view."""
    def bar(t: int, n: int, closed: bool) -> dict[str, Any]:
        return {**bars([m for m in sent if m["ts"] - m["ts"] % 1000 == t][:n], 1000, "1s")[0], "closed": closed}
    views = of(lines, "candles")
    for line in views:
        held = line["candles"]
        assert [c["t"] for c in held] == sorted({c["t"] for c in held}), line
        for candle in held:
            assert candle == bar(candle["t"], candle["n"], candle["closed"]), candle
            if candle["closed"]:
                assert candle["n"] == len([m for m in sent if m["ts"] - m["ts"] % 1000 == candle["t"]]), candle
    return list(views[-1]["candles"])


async def test_the_trades_and_candles_helpers_equal_the_gateway_on_two_pods_through_a_drop(
        start_cluster: ClusterFactory) -> None:
    # Trades published as they happen (the feed's ts is now): one helper client on a pod, one through nginx whose
    # transport drops while trades go on. The gateway replays no trade or candle after a reconnect: the helpers
    # ask the history again and merge it (trades by id, candles by t).
    cluster = start_cluster(pods=2)
    pod = cluster.pods[0]
    sent: list[dict[str, Any]] = []

    async def trades_for(seconds: float, every: float = 0.1) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            sent.append(trade(len(sent), time.time_ns() // 1_000_000))
            await feed(pod, sent[-1])
            await asyncio.sleep(every)  # pacing the feed

    last, history = 50, 50
    plan = {"token": token("alice"), "trades": [{"asset": BTC, "last": last}],
            "candles": [{"asset": BTC, "interval": "1s", "history": history}]}
    # A recorder of what a socket.io-client sees through nginx, replayed through the helpers afterwards.
    record_plan = {"trades": [{"asset": BTC, "history": last}], "candles": plan["candles"]}
    # From the next second on, so the pods heard each bar whole (a bar no pod saw whole is never closed).
    await asyncio.sleep(1.05 - time.time() % 1.0)
    sent.extend(trade(n, time.time_ns() // 1_000_000) for n in range(30))  # history before the helpers start
    await feed(pod, *sent)
    async with node_session("companion.mjs", {"url": cluster.pods[1].url, **plan}) as steady, \
            node_session("companion.mjs", {"url": cluster.url, **plan}) as dropped, \
            node_session("record.mjs", {"url": cluster.url, "token": plan["token"], **record_plan}) as recorder:
        for session in (steady, dropped, recorder):
            await session.until("ready")
        await trades_for(1.5)
        for session in (dropped, recorder):
            await session.send({"cmd": "drop"})
        await dropped.until("disconnect")
        await trades_for(0.4, every=0.03)  # missed by the dropped client (fewer than it keeps)
        await dropped.until("connect")
        await trades_for(1.5)
        # A trade of a later second closes the bars before it; wait until both helpers hold them closed.
        await asyncio.sleep(1.05 - time.time() % 1.0)
        await trades_for(0.01)
        final = sent[-1]["ts"] - sent[-1]["ts"] % 1000

        def settled(lines: list[dict[str, Any]]) -> bool:
            tapes, views = of(lines, "tape"), of(lines, "candles")
            return (bool(tapes) and tapes[-1]["trades"][-1]["id"] == sent[-1]["id"] and bool(views)
                    and all(c["closed"] for c in views[-1]["candles"] if c["t"] < final))
        for session in (steady, dropped):
            await read_until(session, settled)
        await read_until(recorder, lambda lines: any(
            line["type"] == "record" and line.get("event") == "trade" and line["args"][0]["id"] == sent[-1]["id"]
            for line in lines))
        # What a new subscriber is sent, on the other pod.
        calls = [["trades:subscribe", {"asset": BTC, "history": last}],
                 ["candles:subscribe", {"asset": BTC, "interval": "1s", "history": history}]]
        async with client(pod.url, calls) as new:
            server_trades, server_candles = acks(new)
    assert server_trades["ok"] and server_trades["trades"] == [event_of(m) for m in sent[-last:]]
    server_closed = [c for c in server_candles["candles"] if c["closed"] and c["t"] < final]
    assert len(server_closed) >= 4, server_candles
    for session in (steady, dropped):
        assert tape_checks(session.lines, sent, last) == server_trades["trades"]
        closed = [c for c in candle_checks(session.lines, sent) if c["closed"] and c["t"] < final]
        assert closed == server_closed
        # Each trade once, in feed order, from the first the helper was sent to the last: none the drop lost.
        ids = [line["id"] for line in of(session.lines, "new-trade")]
        assert ids == [m["id"] for m in sent[-len(ids):]] and len(ids) >= len(sent) - 30, ids
        assert not of(session.lines, "error"), of(session.lines, "error")
    assert len(of(dropped.lines, "connect")) == 2
    # What the recorder saw, replayed through the helpers in node.
    ARTIFACTS.mkdir(exist_ok=True)
    recorded = ARTIFACTS / "js-client-trades-recorded.json"
    stream = [{k: v for k, v in line.items() if k != "type"} for line in recorder.lines if line["type"] == "record"]
    assert [entry["kind"] for entry in stream].count("connect") == 2
    recorded.write_text(json.dumps({"plan": record_plan, "feed": [event_of(m) for m in sent],
                                    "bars": [b for b in bars(sent, 1000, "1s") if b["t"] < final], "stream": stream}))
    done = await asyncio.to_thread(
        subprocess.run, ["node", "--test", str(PACKAGE / "test" / "trades-replay.test.mjs")], cwd=PACKAGE,
        capture_output=True, text=True, timeout=300, env={**os.environ, "RECORDED_TRADES": str(recorded)})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


DOC = ROOT / "docs" / "js-client.md"
PRELUDE = """\
const plan = JSON.parse(process.argv[2]);
const GATEWAY_URL = plan.url;
const getToken = async () => plan.token;
const render = (type, data) => process.stdout.write(JSON.stringify({ type, data }) + "\\n");
"""


async def test_the_docs_ten_line_app_runs(start_gateway: InProcessFactory) -> None:
    # The app of docs/js-client.md, verbatim, on the embedded simulator (prices and a moving book) with
    # positions written by the back end.
    text = DOC.read_text()
    app = text[text.index("// app begin\n"):text.index("// app end\n")]
    assert len([line for line in app.splitlines()[1:] if line.strip()]) <= 12
    ARTIFACTS.mkdir(exist_ok=True)
    script = ARTIFACTS / "js-client-app.mjs"  # under the checkout, so node finds its node_modules
    script.write_text(PRELUDE + app)
    gateway = await start_gateway(simulated_rate=10)
    async with node_session(str(script), {"url": gateway.url, "token": token("alice")}) as app_run:
        ops = [{"op": "set", "key": "1", "value": {"qty": "1.0"}}, {"op": "merge", "key": "1", "changes": {"pnl": "2"}}]
        status, _ = await write_state(gateway.url, {"user": "alice", "name": "positions", "ops": ops})
        assert status == 200

        def seen(lines: list[dict[str, Any]]) -> bool:
            kinds = {line["type"] for line in lines}
            return {"price", "book", "position", "tape"} <= kinds and len(of(lines, "book")) >= 5
        try:
            await read_until(app_run, seen)
        except TimeoutError:
            raise AssertionError(f"the app printed {[line['type'] for line in app_run.lines]}") from None
    books = [line["data"] for line in of(app_run.lines, "book")]
    assert all(len(view["bids"]) == len(view["asks"]) == 10 for view in books)
    assert [b["seq"] for b in books] == sorted(b["seq"] for b in books)
    positions = [line["data"] for line in of(app_run.lines, "position")]
    assert positions[-1] == {"key": "1", "value": {"qty": "1.0", "pnl": "2"}, "version": 1}
    assert {line["data"]["asset"] for line in of(app_run.lines, "price")} == {BTC, ETH}
    for tape in (line["data"] for line in of(app_run.lines, "tape")):  # the simulator numbers its trades
        ids = [int(item["id"]) for item in tape]
        assert 0 < len(ids) <= 30 and ids == sorted(set(ids)) and {item["asset"] for item in tape} == {BTC}, ids
