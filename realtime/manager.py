"""The python-socketio client manager, chosen by URL.

`memory://` (embedded): python-socketio's in-process `AsyncManager`.
`redis://`: `AsyncRedisManager`, so any pod or back-end process
(`AsyncRedisManager(url, write_only=True)`) reaches any client, with these
corrections to the stock one:

- short socket timeouts (a hung Redis would block every emit for ~10 s);
- a jittered reconnect backoff capped at `REALTIME_REDIS_RETRY_MAX` instead
  of 60 s, and one log line per outage instead of one per attempt;
- while Redis is down, an emit is delivered to this pod's clients and its
  copy for the other pods is dropped at once and counted (the stock manager
  tries twice per emit, waits up to two timeouts and logs two errors each);
- an emit to a single sid of this pod is not published at all: no other pod
  holds that client.

It also reports whether its listener is connected, for `/ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import socketio

from .backoff import Backoff
from .config import Settings
from .liveness import Liveness

log = logging.getLogger("realtime.manager")

# At most one "publish failed" line per this many seconds.
PUBLISH_WARNING_EVERY = 10.0


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
        # Emits whose copy for the other pods was lost to a Redis outage.
        self.publish_dropped = 0
        self._dropped_this_outage = 0
        self._last_publish_warning = -PUBLISH_WARNING_EVERY

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        # Replaces the stock loop (1 s doubling to 60 s, an error line per attempt).
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                if self.backoff.attempts:
                    self.reconnects += 1
                    log.info("manager: listening on %s again; %d emits to other pods were dropped meanwhile",
                             self.channel, self._dropped_this_outage)
                self.listening = True
                self._dropped_this_outage = 0
                self.backoff.reset()
                liveness = Liveness(self.pubsub, self.redis_options["socket_timeout"])
                while True:
                    message = await liveness.next_message()
                    if message is not None:
                        if message["type"] == "message":
                            self.received += 1
                        yield message
            except Exception as exc:  # redis-py raises several families; all mean "reconnect"
                if self.listening or self.backoff.attempts == 0:
                    log.warning("manager: Redis unavailable (%s); retrying, every %.1fs at most; "
                                "emits reach this pod's clients only until it is back",
                                exc.__class__.__name__, self.backoff.cap)
                self.listening = False
                await self._drop_connection()
                await asyncio.sleep(self.backoff.next_delay())

    async def _drop_connection(self) -> None:
        """Close the broken client, so each retry does not leak a connection pool."""
        self.connected = False
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def _publish(self, data: Any) -> None:
        if data.get("method") == "emit" and self._local_sid(data.get("room"), data.get("namespace")):
            return
        if not self.listening:
            self._dropped()
            return
        try:
            if not self.connected:
                self._redis_connect()
            await self.redis.publish(self.channel, self.json.dumps(data))
            self.published += 1
        except Exception as exc:
            # The listener notices the outage too and owns the reconnect; this emit is lost.
            now = time.monotonic()
            if now - self._last_publish_warning >= PUBLISH_WARNING_EVERY:
                self._last_publish_warning = now
                log.warning("manager: publish failed (%s); this emit reached this pod's clients only",
                            exc.__class__.__name__)
            self._dropped()

    def _local_sid(self, room: Any, namespace: Any) -> bool:
        return isinstance(room, str) and self.is_connected(room, namespace or "/")

    def _dropped(self) -> None:
        self.publish_dropped += 1
        self._dropped_this_outage += 1


def client_manager(settings: Settings) -> socketio.AsyncManager:
    if settings.embedded:
        return socketio.AsyncManager()
    return RedisManager(settings)


def manager_ready(manager: socketio.AsyncManager) -> bool:
    return not isinstance(manager, RedisManager) or manager.listening
