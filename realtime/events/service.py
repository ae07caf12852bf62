"""`Events`: the durable private events of one pod, put together around its backends.

The log, the sessions and the stream router come from `realtime.backends`:
in this process for `memory://` (no stream), else in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from realtime.backplane.connections import REDIS_ERRORS
from realtime.catalog import Catalog
from realtime.config import Settings
from realtime.engine.server import SocketServer
from realtime.events.log import EventLog
from realtime.events.offsets import Offset
from realtime.events.reader import LogReader
from realtime.events.recovery import Recovery, heartbeat_period
from realtime.events.router import StreamRouter
from realtime.events.sessions import SessionStore
from realtime.metrics import RedisLink
from realtime.protocol import ErrorCode, GatewayError
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# Beyond the window, history is kept for a client whose drop the server noticed
# late (ping interval + timeout), a session's last heartbeat period, and clock skew.
SKEW = 5.0


def retention(settings: Settings) -> float:
    """Seconds of history the log keeps."""
    window = settings.recovery_window
    return window + heartbeat_period(window) + settings.ping_interval + settings.ping_timeout + SKEW


class Events:
    """The log, its reader, sessions and recovery, and the stream router (Redis only)."""

    def __init__(self, settings: Settings, sio: SocketServer, catalog: Catalog, *,
                 log: EventLog, sessions: SessionStore, router: StreamRouter | None) -> None:
        self.settings = settings
        self.log = log
        self.sessions = sessions
        self.router = router
        self.local = router is None  # memory://: nothing is shared, nothing to reconnect to
        # A replay goes in parts of a quarter of the slow-consumer bound: room for live traffic beside it.
        self.reader = LogReader(self.log, sio, with_offsets=settings.recovery_window > 0,
                                retry_max=settings.redis_retry_max,
                                part_bytes=settings.slow_consumer_max_bytes // 4)
        self.recovery = Recovery(sio, self.log, self.sessions, self.reader, catalog,
                                 window=settings.recovery_window, max_subscriptions=settings.max_subscriptions)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.reader.run(), name="events-reader"),
                       asyncio.create_task(self.reader.serve(), name="events-admissions"),
                       asyncio.create_task(self.recovery.run(), name="events-sessions")]
        if self.router is not None:
            self._tasks.append(asyncio.create_task(self.router.run(), name="events-router"))

    async def stop(self) -> None:
        """Stop the tasks, after one last write of what the drain changed (sessions to release)."""
        with contextlib.suppress(TimeoutError, *REDIS_ERRORS):
            async with asyncio.timeout(self.settings.redis_timeout):
                await self.recovery.flush()
        await cancel(*self._tasks)
        if self.router is not None:
            await self.router.close()
        await self.sessions.close()
        await self.log.close()

    async def publish(self, room: str, event: str, data: bytes) -> Offset:
        """Store a private event (`data`: JSON text, checked by `validation`) for delivery and recovery;
        its offset. UNAVAILABLE unless it is stored."""
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                offset = await self.log.append(room, event, data)
        except REDIS_ERRORS:
            raise GatewayError(ErrorCode.UNAVAILABLE, "Redis is unavailable; the event was not stored") from None
        except Exception:
            # redis-py can fail from inside a connection it is still closing (AttributeError on its writer)
            # right after Redis comes back: the event is not stored, which is a 503, not a 500.
            logger.exception("events: storing an event failed")
            raise GatewayError(ErrorCode.UNAVAILABLE, "the event was not stored") from None
        assert offset is not None
        return offset

    @property
    def ready(self) -> bool:
        """Whether this pod reads the event log (always, in embedded mode)."""
        return self.local or self.reader.connected

    def links(self) -> list[RedisLink]:
        if self.local:
            return []
        return [RedisLink("events", lambda: self.reader.connected, lambda: self.reader.reconnects)]
