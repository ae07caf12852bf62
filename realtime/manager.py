"""The python-socketio client manager, chosen by URL.

`memory://` (embedded): python-socketio's in-process `AsyncManager`.
`redis://`: `AsyncRedisManager`, so any pod or back-end process
(`AsyncRedisManager(url, write_only=True)`) reaches any client, with two
corrections to the stock one: short socket timeouts (a hung Redis would block
every emit for ~10 s) and a jittered reconnect backoff capped at
`REALTIME_REDIS_RETRY_MAX` instead of 60 s. It also reports whether its
listener is connected, for `/ready`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio

from .backoff import Backoff
from .config import Settings

log = logging.getLogger("realtime.manager")


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            url=settings.redis_url,
            channel=settings.manager_channel,
            redis_options={
                "socket_timeout": settings.redis_timeout,
                "socket_connect_timeout": settings.redis_timeout,
                "health_check_interval": max(1.0, settings.redis_timeout),
            },
        )
        self.backoff = Backoff(cap=settings.redis_retry_max)
        self.listening = False
        self.reconnects = 0
        # Manager messages through Redis, for /metrics (our own come back to us too).
        self.received = 0
        self.published = 0

    async def _publish(self, data: Any) -> Any:
        self.published += 1
        return await super()._publish(data)

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        # Replaces the stock loop (1 s doubling to 60 s, an error line per attempt).
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                if self.backoff.attempts:
                    self.reconnects += 1
                    log.info("manager: listening on %s again", self.channel)
                self.listening = True
                self.backoff.reset()
                while True:
                    message = await self.pubsub.get_message(timeout=self.redis_options["socket_timeout"])
                    if message is not None:
                        if message["type"] == "message":
                            self.received += 1
                        yield message
            except Exception as exc:  # redis-py raises several families; all mean "reconnect"
                if self.listening or self.backoff.attempts == 0:
                    log.warning("manager: Redis unavailable (%s); retrying", exc.__class__.__name__)
                self.listening = False
                self.connected = False
                await asyncio.sleep(self.backoff.next_delay())


def client_manager(settings: Settings) -> socketio.AsyncManager:
    if settings.embedded:
        return socketio.AsyncManager()
    return RedisManager(settings)


def manager_ready(manager: socketio.AsyncManager) -> bool:
    return not isinstance(manager, RedisManager) or manager.listening
