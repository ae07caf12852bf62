"""Channels and keyed state in the tests: the customer's subscribe hook, the node client, the state API.

`SubscribeHook` is a small real aiohttp app on a free port, the back end a
deployment would run: it verifies the gateway's service JWT and answers from
`rules` (channel -> "allow", "deny", "error" (HTTP 500), "slow" (answers
after 5 s) or "allow-nocache" (ttl 0)), counting calls per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import jwt
from aiohttp import web

from realtime.channels.hook import AUDIENCE
from tests.support.node import NodeSession, node_session
from tests.support.processes import free_port
from tests.support.tokens import SECRET, token
from tests.support.web import http_json

SERVICE = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}


class SubscribeHook:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.questions: list[dict[str, Any]] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/can-subscribe"

    async def answer(self, request: web.Request) -> web.Response:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        claims = jwt.decode(credentials, SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert scheme == "Bearer" and "service" in claims["roles"], claims
        question = await request.json()
        self.questions.append(question)
        channel = question["channel"]
        self.calls[channel] += 1
        rule = self.rules.get(channel, "deny")
        if rule == "error":
            return web.json_response({"error": "boom"}, status=500)
        if rule == "slow":
            await asyncio.sleep(5)
        if rule == "allow-nocache":
            return web.json_response({"allow": True, "ttl": 0})
        return web.json_response({"allow": rule in ("allow", "slow"), "ttl": 60})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/can-subscribe", self.answer)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def subscribe_hook() -> AsyncIterator[SubscribeHook]:
    hook = SubscribeHook()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.stop()


@contextlib.asynccontextmanager
async def channel_client(url: str, sub: str = "alice", **claims: Any) -> AsyncIterator[ChannelClient]:
    """tests/js/channels.mjs for `sub` (token claims such as `channels=[...]`)."""
    async with node_session("channels.mjs", {"url": url, "token": token(sub, **claims)}) as session:
        client = ChannelClient(session)
        await client.until("connect")
        yield client


class ChannelClient:
    def __init__(self, session: NodeSession) -> None:
        self.session = session

    @property
    def lines(self) -> list[dict[str, Any]]:
        return self.session.lines

    async def until(self, kind: str, predicate: Any = None, *, since: int = 0, timeout: float = 30) -> dict[str, Any]:
        """The first line from index `since` on (already seen or to come) of `kind` matching `predicate`."""
        seen = since
        while True:
            for line in self.lines[seen:]:
                if line["type"] == kind and (predicate is None or predicate(line)):
                    return line
            seen = max(seen, len(self.lines))
            line = await self.session.next(timeout)
            assert line["type"] != "timeout", self.lines[-20:]

    async def wait(self, predicate: Any, timeout: float = 30) -> None:
        """Read lines until `predicate()` holds."""
        while not predicate():
            line = await self.session.next(timeout)
            assert line["type"] != "timeout", self.lines[-20:]

    async def emit(self, event: str, payload: Any) -> dict[str, Any]:
        """Send `event` and return its ack."""
        since = len(self.lines)
        await self.session.send({"cmd": "emit", "event": event, "payload": payload})
        line = await self.until("ack", lambda line: line["event"] == event, since=since)
        ack: dict[str, Any] = line["ack"]
        return ack

    async def states(self) -> dict[str, Any]:
        """The states as the client keeps them: "<channel>/<name>" -> {version, items}."""
        since = len(self.lines)
        await self.session.send({"cmd": "states"})
        states: dict[str, Any] = (await self.until("states", since=since))["states"]
        return states

    async def drop(self) -> None:
        since = len(self.lines)
        await self.session.send({"cmd": "drop", "hold": True})
        await self.until("disconnect", since=since)

    async def reconnect(self) -> dict[str, Any]:
        """Come back; the new connect line."""
        since = len(self.lines)
        await self.session.send({"cmd": "reconnect"})
        return await self.until("connect", since=since)

    def count(self, kind: str) -> int:
        return sum(1 for line in self.lines if line["type"] == kind)

    def events(self, event: str) -> list[list[Any]]:
        """The arguments of each `event` received, in order."""
        return [line["args"] for line in self.lines if line["type"] == "event" and line["event"] == event]


async def publish(url: str, event: str, data: Any, *, room: str) -> str:
    """POST /api/v1/publish to `room`; the offset."""
    status, body = await http_json(url + "/api/v1/publish", "POST", headers=SERVICE,
                                   json={"event": event, "room": room, "data": data})
    assert status == 202, body
    offset: str = body["offset"]
    return offset


async def write_state(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST /api/v1/state; (status, body)."""
    return await http_json(url + "/api/v1/state", "POST", headers=SERVICE if headers is None else headers, json=body)
