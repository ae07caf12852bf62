"""Keyed state (SPEC §10) with the node socket.io-client on two pods behind nginx.

Hundreds of random writes through both pods' APIs: the client that applies
each `state:update` to its snapshot ends equal to the server and to an
independent model of the ops, versions are consecutive, and merges carry only
the fields that changed. Recovery replays missed updates, and past the
window (or past `REALTIME_STATE_REPLAY` missed updates) sends `state:snapshot`.
Refused requests change nothing: the version does not move.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import pytest

from tests.support import (
    ROOT,
    ClusterFactory,
    InProcessFactory,
    RedisServer,
    connected,
    http_json,
    node_session,
    served_on_redis,
    token,
)
from tests.support.channels import ChannelClient, channel_client, write_state

ARTIFACTS = ROOT / "test-artifacts"
KEYS = [f"p{i}" for i in range(12)]
FIELDS = ["qty", "price", "profit", "side"]


def random_ops(rng: random.Random) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(KEYS)
        kind = rng.choices(["set", "merge", "delete"], [3, 6, 1])[0]
        if kind == "set":
            # Now and then a value that is not an object: a merge into it is refused, the whole request.
            value: Any = {f: rng.randint(0, 3) for f in rng.sample(FIELDS, 3)}
            if rng.random() < 0.1:
                value = rng.randint(0, 3)
            ops.append({"op": "set", "key": key, "value": value})
        elif kind == "merge":
            ops.append({"op": "merge", "key": key,
                        "changes": {f: rng.randint(0, 3) for f in rng.sample(FIELDS, rng.randint(1, 3))}})
        else:
            ops.append({"op": "delete", "key": key})
    return ops


def model_apply(items: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The ops' meaning, written independently of the gateway's code."""
    for op in ops:
        if op["op"] == "set":
            items[op["key"]] = copy.deepcopy(op["value"])
        elif op["op"] == "merge":
            items[op["key"]] = {**items.get(op["key"], {}), **op["changes"]}
        else:
            items.pop(op["key"], None)


def check_updates(client: ChannelClient, ack: dict[str, Any], name: str, channel: str | None = None) -> int:
    """Replay what the client received onto its ack: consecutive versions, merges of changed fields only,
    each update ending with its offset; the last version."""
    items = copy.deepcopy(ack["items"])
    version = ack["version"]
    for args in client.events("state:update"):
        update, offset = args
        if update["name"] != name or update.get("channel") != channel or update["version"] <= version:
            continue
        assert isinstance(offset, str)
        assert update["version"] == version + 1, (version, update)
        for op in update["ops"]:
            if op["op"] == "merge":
                old = items[op["key"]]
                assert op["changes"] and all(old.get(f, object()) != v for f, v in op["changes"].items()), (old, op)
                items[op["key"]] = {**old, **op["changes"]}
            elif op["op"] == "set":
                assert items.get(op["key"]) != op["value"], op
                items[op["key"]] = op["value"]
            else:
                assert op["key"] in items, op
                del items[op["key"]]
        version = update["version"]
    return version


async def test_random_writes_keep_every_subscriber_equal_to_the_server(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(2)
    rng = random.Random(22)
    model: dict[str, Any] = {}
    channel_model: dict[str, Any] = {}
    async with (channel_client(cluster.url, "alice", channels=["bot:42"]) as alice,
                channel_client(cluster.url, "bob", channels=["bot:*"]) as bob):
        mine = await alice.emit("state:subscribe", {"name": "positions"})
        assert mine == {"ok": True, "name": "positions", "version": 0, "items": {}}
        acks = {"alice": [await alice.emit("state:subscribe", {"name": "positions", "channel": "bot:42"})]}
        accepted = {"user": 0, "channel": 0}
        for i in range(300):
            ops = random_ops(rng)
            pod = cluster.pods[i % 2].url
            if i % 4 == 3:
                target, items, body = "channel", channel_model, {"channel": "bot:42", "name": "positions", "ops": ops}
            else:
                target, items, body = "user", model, {"user": "alice", "name": "positions", "ops": ops}
            status, answer = await write_state(pod, body)
            trial = copy.deepcopy(items)
            try:
                model_apply(trial, ops)
                valid = True
            except TypeError:
                valid = False
            if status == 200:
                accepted[target] += 1
                items.clear()
                items.update(trial)
                assert answer["version"] == accepted[target], answer
            else:
                assert status == 400 and not valid, (status, answer)
            if i == 150:
                # Bob subscribes in the middle of the writes.
                acks["bob"] = [await bob.emit("state:subscribe", {"name": "positions", "channel": "bot:42"})]
        assert accepted["user"] > 150 and accepted["channel"] > 50 and sum(accepted.values()) < 300

        async def settled(client: ChannelClient, key: str, version: int) -> dict[str, Any]:
            for _ in range(400):
                state: dict[str, Any] = (await client.states()).get(key) or {"version": -1}
                if state["version"] >= version:
                    return state
                await asyncio.sleep(0.05)
            raise AssertionError(f"{key} did not reach version {version}")

        mine_now = await settled(alice, "/positions", accepted["user"])
        assert mine_now == {"version": accepted["user"], "items": model}
        assert check_updates(alice, mine, "positions") == accepted["user"]
        for client, name in ((alice, "alice"), (bob, "bob")):
            state = await settled(client, "bot:42/positions", accepted["channel"])
            assert state == {"version": accepted["channel"], "items": channel_model}
            assert check_updates(client, acks[name][0], "positions", "bot:42") == accepted["channel"]
        # The server agrees: a fresh snapshot through the other pod.
        async with channel_client(cluster.pods[1].url, "alice") as fresh:
            again = await fresh.emit("state:subscribe", {"name": "positions"})
            assert again == {"ok": True, "name": "positions", "version": accepted["user"], "items": model}
        assert not [line for line in alice.lines + bob.lines if line["type"] == "gap"]


async def test_recovery_replays_missed_updates_and_past_the_bound_sends_a_snapshot(
        start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(2, state_replay=10)
    async with channel_client(cluster.url, "alice") as alice:
        ack = await alice.emit("state:subscribe", {"name": "orders"})
        items: dict[str, Any] = {}

        async def write(n: int) -> None:
            ops = [{"op": "set", "key": f"o{n % 7}", "value": {"n": n}}]
            model_apply(items, ops)
            status, _ = await write_state(cluster.pods[n % 2].url, {"user": "alice", "name": "orders", "ops": ops})
            assert status == 200

        await write(1)
        await alice.wait(lambda: len(alice.events("state:update")) == 1)
        # A short drop: the missed updates are replayed, with their offsets.
        await alice.drop()
        for n in range(2, 7):
            await write(n)
        assert (await alice.reconnect())["recovered"] is True
        await alice.wait(lambda: len(alice.events("state:update")) == 6)
        assert [a[0]["version"] for a in alice.events("state:update")] == [1, 2, 3, 4, 5, 6]
        assert alice.events("state:snapshot") == []
        assert check_updates(alice, ack, "orders") == 6
        # More missed than the replay bound: one state:snapshot instead.
        await alice.drop()
        for n in range(7, 30):
            await write(n)
        assert (await alice.reconnect())["recovered"] is True
        await alice.wait(lambda: len(alice.events("state:snapshot")) == 1)
        [[snapshot]] = alice.events("state:snapshot")
        assert snapshot == {"name": "orders", "version": 29, "items": items}
        assert len(alice.events("state:update")) == 6
        await write(30)
        await alice.wait(lambda: len(alice.events("state:update")) == 7)
        assert (await alice.states())["/orders"] == {"version": 30, "items": items}


async def test_past_the_window_a_recovery_gets_a_snapshot(start_cluster: ClusterFactory) -> None:
    # History is kept for window + heartbeat + ping interval + timeout + 5 s = 2 + 0.5 + 1 + 1 + 5.
    cluster = start_cluster(2, recovery_window=2, ping_interval=1, ping_timeout=1)
    async with channel_client(cluster.url, "alice") as alice:
        await alice.emit("state:subscribe", {"name": "orders"})
        status, _ = await write_state(cluster.pods[1].url, {"user": "alice", "name": "orders",
                                                    "ops": [{"op": "set", "key": "a", "value": 1}]})
        assert status == 200
        await alice.wait(lambda: len(alice.events("state:update")) == 1)
        await asyncio.sleep(10)  # the client's offset is now older than any history kept
        await alice.drop()
        status, _ = await write_state(cluster.pods[1].url, {"user": "alice", "name": "orders",
                                                    "ops": [{"op": "set", "key": "b", "value": 2}]})
        assert (await alice.reconnect())["recovered"] is True
        await alice.wait(lambda: len(alice.events("state:snapshot")) == 1)
        assert alice.events("state:snapshot") == [[{"name": "orders", "version": 2, "items": {"a": 1, "b": 2}}]]


async def test_refused_writes_change_nothing(start_gateway: InProcessFactory, redis_server: RedisServer) -> None:
    gateway = await served_on_redis(start_gateway, redis_server, state_max_keys=3, state_max_value_bytes=64,
                            max_message_bytes=2048)
    url = gateway.url
    good = {"user": "alice", "name": "positions", "ops": [{"op": "set", "key": "a", "value": {"qty": 1}},
                                                          {"op": "set", "key": "n", "value": 5}]}
    assert await write_state(url, good) == (200, {"ok": True, "name": "positions", "version": 1})
    refusals: list[tuple[Any, int, str]] = [
        ({**good, "ops": [{"op": "merge", "key": "a", "changes": {"qty": 2}},
                          {"op": "merge", "key": "n", "changes": {"x": 1}}]}, 400, "BAD_REQUEST"),
        ({**good, "ops": [{"op": "set", "key": k, "value": 1} for k in "bcd"]}, 413, "PAYLOAD_TOO_LARGE"),
        ({**good, "ops": [{"op": "set", "key": "a", "value": "x" * 100}]}, 413, "PAYLOAD_TOO_LARGE"),
        ({**good, "ops": [{"op": "merge", "key": "a", "changes": {"note": "x" * 80}}]}, 413, "PAYLOAD_TOO_LARGE"),
        ({**good, "ops": [{"op": "set", "key": f"k{i}", "value": "x" * 40} for i in range(60)]}, 413,
         "PAYLOAD_TOO_LARGE"),
        ({**good, "ops": []}, 400, "BAD_REQUEST"),
        ({**good, "ops": [{"op": "replace", "key": "a", "value": 1}]}, 400, "BAD_REQUEST"),
        ({**good, "ops": [{"op": "set", "key": "", "value": 1}]}, 400, "BAD_REQUEST"),
        ({**good, "name": "no spaces"}, 400, "BAD_REQUEST"),
        ({**good, "channel": "bot:1"}, 400, "BAD_REQUEST"),
        ({"channel": "user:bob", "name": "positions", "ops": good["ops"]}, 403, "FORBIDDEN"),
        ({"name": "positions", "ops": good["ops"]}, 400, "BAD_REQUEST"),
        ([1, 2], 400, "BAD_REQUEST"),
    ]
    for body, status, code in refusals:
        answer = await write_state(url, body)
        assert answer[0] == status and answer[1]["error"]["code"] == code, (body, answer)
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {token('alice')}"}, 403)):
        assert (await write_state(url, good, headers))[0] == status
    async with channel_client(url, "alice") as alice:
        ack = await alice.emit("state:subscribe", {"name": "positions"})
        assert ack == {"ok": True, "name": "positions", "version": 1, "items": {"a": {"qty": 1}, "n": 5}}


@pytest.mark.slow  # chromium
async def test_the_board_shows_the_demo_positions_as_the_server_keeps_them(start_gateway: InProcessFactory) -> None:
    # Embedded dev mode: the simulator's prices mark the board user's demo portfolio once a second.
    gateway = await start_gateway(jwt_secret=None, simulated_rate=5)
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {"url": gateway.url + "/", "screenshot": str(ARTIFACTS / "board-positions.png")}
    async with node_session("positions.mjs", plan) as browser:
        shown = await browser.until("shown", timeout=60)
        assert set(shown["rows"]) == {"BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"}
        _, body = await http_json(gateway.url + "/board/token")
        async with connected(gateway.url, auth={"token": body["token"]}) as server:
            # The page and a fresh snapshot at the same version hold the same table.
            for _ in range(20):
                snapshot = await server.call("state:subscribe", {"name": "positions"})
                await browser.send({"step": "read"})
                table = await browser.until("table")
                if table["version"] == snapshot["version"]:
                    break
            else:
                raise AssertionError("the page never showed the server's version")
    assert table["rows"] == {key: {field: str(value) for field, value in position.items()}
                             for key, position in snapshot["items"].items()}
    assert table["version"] >= 3


async def test_the_readme_example_keeps_a_positions_table(start_gateway: InProcessFactory) -> None:
    # tests/js/example.mjs is the README's code (test_board checks they are the same).
    gateway = await start_gateway()
    user = "alice"
    async with node_session("example.mjs", {"url": gateway.url, "token": token(user)}) as example:
        assert (await example.until("positions"))["items"] == {}
        for ops in ([{"op": "set", "key": "12345", "value": {"qty": "1.0", "profit": "0.00"}}],
                    [{"op": "merge", "key": "12345", "changes": {"profit": "245.50"}}],
                    [{"op": "set", "key": "12346", "value": {"qty": "2.0", "profit": "1.00"}}],
                    [{"op": "delete", "key": "12346"}]):
            status, _ = await write_state(gateway.url, {"user": user, "name": "positions", "ops": ops})
            assert status == 200
            shown = (await example.until("positions"))["items"]
        assert shown == {"12345": {"qty": "1.0", "profit": "245.50"}}
