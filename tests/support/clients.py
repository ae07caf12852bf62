"""python-socketio AsyncClients for the tests: a recorder of every event, connects that must fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import socketio


class Recorder:
    """A python-socketio AsyncClient that records every event it receives."""

    def __init__(self, **client_options: Any) -> None:
        self.client = socketio.AsyncClient(reconnection=False, **client_options)
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

        async def record(event: str, *args: Any) -> None:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._changed.set()

        async def disconnected(reason: Any = None) -> None:
            self.events.append(("disconnect", reason))
            self._changed.set()

        self.client.on("*", record)
        self.client.on("disconnect", disconnected)

    def names(self) -> list[str]:
        """The names of the events received so far, in order ("disconnect" included)."""
        return [name for name, _ in self.events]

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until `count` `event`s have arrived; return all of them."""
        async def until() -> None:
            while len(self.received(event)) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)
        return self.received(event)

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        if not args:
            return await self.client.call(event, timeout=timeout)
        data = args[0] if len(args) == 1 else tuple(args)  # a tuple is sent as several arguments
        return await self.client.call(event, data, timeout=timeout)


@contextlib.asynccontextmanager
async def connected(url: str, *, auth: Any = None, transports: list[str] | None = None,
                    headers: Mapping[str, str] | None = None, query: str = "", sticky: bool = False,
                    **options: Any) -> AsyncIterator[Recorder]:
    """A connected Recorder; `sticky` keeps cookies (nginx's affinity cookie) as a browser does."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) if sticky else None
    if session is not None:
        options["http_session"] = session
    recorder = Recorder(**options)
    try:
        async with _connected(recorder, url, auth, transports, headers, query):
            yield recorder
    finally:
        if session is not None:
            await session.close()


@contextlib.asynccontextmanager
async def _connected(recorder: Recorder, url: str, auth: Any, transports: list[str] | None,
                     headers: Mapping[str, str] | None, query: str) -> AsyncIterator[None]:
    await recorder.client.connect(url + (f"?{query}" if query else ""), auth=auth,
                                  transports=transports or ["websocket"], headers=dict(headers or {}),
                                  wait_timeout=10)
    try:
        yield
    finally:
        # python-engineio's polling client waits for its pending long-poll (up to
        # 30 s) before it returns from disconnect; the server side is done at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.client.disconnect(), 2)


async def connect_error(url: str, *, query: str = "", **kwargs: Any) -> Any:
    """Connect expecting a refusal; return the `err.data` the server sent."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    try:
        await client.connect(url + (f"?{query}" if query else ""), wait_timeout=10, transports=["websocket"],
                             **kwargs)
    except socketio.exceptions.ConnectionError:
        assert len(errors) == 1, errors
        assert errors[0]["message"] == errors[0]["data"]["code"], errors[0]
        return errors[0]["data"]
    finally:
        await client.disconnect()
    raise AssertionError("the connection was accepted")
