"""Node socket.io-client sessions for the recovery tests: publishing private events, ticks, and what a client saw."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from realtime.events import offsets
from tests.support.feed import BTC, publish
from tests.support.gateway import Gateway
from tests.support.node import NodeSession, node_session
from tests.support.tokens import token
from tests.support.web import http_json

SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


async def publish_event(url: str, user: str, event: str, data: Any) -> str:
    status, body = await http_json(url + "/api/v1/publish", "POST", headers=SERVICE,
                                   json={"event": event, "user": user, "data": data})
    assert status == 202, body
    offset: str = body["offset"]
    return offset


async def tick(gateway: Gateway, seq: int) -> None:
    await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"],
                  {"asset": BTC, "bid": 1000 + seq, "ask": 1001 + seq, "seq": seq})


@contextlib.asynccontextmanager
async def client(url: str, sub: str = "alice", **plan: Any) -> AsyncIterator[NodeSession]:
    async with node_session("recovery.mjs", {"url": url, "token": token(sub), **plan}) as session:
        yield session


def private(lines: list[dict[str, Any]]) -> list[tuple[str, Any, str]]:
    """(event, data, offset) of each private event the client saw, in order."""
    seen = []
    for line in lines:
        if line["type"] == "event" and not line["event"].startswith("price:"):
            event, args = line["event"], line["args"]
            assert len(args) == 2 and offsets.parse(args[1]), line  # the offset is the last argument
            seen.append((event, args[0], args[1]))
        if line["type"] == "disconnect":  # socket.io-client kept the last offset, to send on reconnect
            assert line["offset"] == (seen[-1][2] if seen else None), (line, seen)
    return seen


def check(lines: list[dict[str, Any]], expected: list[int]) -> None:
    """The client saw `order:update` {"n": n} for exactly `expected`, in that order, with increasing offsets."""
    seen = private(lines)
    assert [data["n"] for _, data, _ in seen] == expected, seen
    keys = [offsets.key(offset) for _, _, offset in seen]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), seen


def prices(lines: list[dict[str, Any]]) -> list[int]:
    return [line["args"][0]["seq"] for line in lines if line["type"] == "event" and line["event"] == "price:update"]


async def until(session: NodeSession, predicate: Any, timeout: float = 30) -> None:
    try:
        while not predicate(session.lines):
            line = await session.next(timeout)
            assert line["type"] not in ("failed", "timeout"), line
    except TimeoutError:
        raise AssertionError(f"the client saw: {session.lines}") from None


def count(kind: str, **match: Any) -> Any:
    return lambda lines: sum(1 for line in lines if line["type"] == kind
                             and all(line.get(k) == v for k, v in match.items()))


def events(n: int) -> Any:
    return lambda lines: len(private(lines)) >= n


async def start(session: NodeSession) -> dict[str, Any]:
    """Wait for the first connect and its subscribe ack; return the ack."""
    await until(session, count("ack"))
    connect = next(line for line in session.lines if line["type"] == "connect")
    assert connect["recovered"] is False and connect["pid"], connect
    ack: dict[str, Any] = next(line for line in session.lines if line["type"] == "ack")["ack"]
    assert ack["subscribed"] == [BTC], ack
    return ack


def last_connect(session: NodeSession) -> dict[str, Any]:
    return [line for line in session.lines if line["type"] == "connect"][-1]


async def recovered_after_drop(session: NodeSession, url: str, gateway: Gateway, *, how: str, seq: int) -> None:
    """Drop while events and ticks flow; come back; check everything arrived once, in order."""
    await tick(gateway, seq + 1)
    for n in (1, 2):
        await publish_event(url, "alice", "order:update", {"n": n})
    await until(session, lambda lines: events(2)(lines) and seq + 1 in prices(lines))
    pid = last_connect(session)["pid"]

    await session.send({"cmd": "drop", "how": how, "hold": True})
    await until(session, count("disconnect"))
    for n in (3, 4):
        await publish_event(url, "alice", "order:update", {"n": n})
    await tick(gateway, seq + 2)
    await tick(gateway, seq + 3)
    await session.send({"cmd": "reconnect"})
    await until(session, count("connect", recovered=True))
    assert last_connect(session)["pid"] == pid
    await until(session, lambda lines: events(4)(lines) and seq + 3 in prices(lines))
    await publish_event(url, "alice", "order:update", {"n": 5})
    await until(session, events(5))
    check(session.lines, [1, 2, 3, 4, 5])
    # The latest price after the replay, no resubscribe (the client skips it when recovered).
    assert prices(session.lines)[-1] == seq + 3
    assert count("ack")(session.lines) == 1
