"""The python-socketio client manager, chosen by URL.

`memory://` (embedded): python-socketio's in-process `AsyncManager` (`MemoryManager`).
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
  holds that client;
- with connection state recovery on, an emit whose last argument is a string
  gets a `null` appended: socket.io-client takes the last string argument of
  any event as its recovery offset (these emits carry none).

It also reports whether its listener is connected, for `/ready`.

On a Redis Cluster (`redis+cluster://`) the manager channel is a sharded
channel: published with SPUBLISH, read with SSUBSCRIBE on the shard that owns
it, so manager traffic costs one shard, not the whole cluster bus. Back ends
cannot use python-socketio's write-only `AsyncRedisManager` there (it can
only PUBLISH to one Redis); they use the HTTP API (`POST /api/v1/publish`).

Both managers tell `watch_rooms` callbacks when a room gets its first member
on this pod and when its last one leaves (the per-asset price channels follow
this).

Both index each sid's rooms (`IndexedRooms`): python-socketio 5.18 finds a
disconnecting sid's rooms by copying and scanning every room of the
namespace, and every user has a room of their own, so 10 000 disconnects at
once (a reconnect storm) cost 10 000 × 20 000 room checks and held the event
loop for ~40 s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio

from realtime.backplane.connections import REDIS_ERRORS, Client, Subscription, client
from realtime.backplane.shards import is_cluster
from realtime.config import Settings
from realtime.metrics import RedisLink
from realtime.namespace import namespace

logger = logging.getLogger(__name__)


RoomCallback = Callable[[str], None]


class IndexedRooms:
    """python-socketio's rooms plus, per namespace, each sid's rooms; a disconnect visits only those."""

    rooms: dict[Any, dict[Any, Any]]
    callbacks: dict[Any, Any]
    pending_connect: dict[Any, list[Any]]
    pending_disconnect: dict[Any, list[Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[Any, dict[Any, list[Any]]] = {}

    def basic_enter_room(self, sid: Any, namespace: Any, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        rooms = self._rooms_of.setdefault(namespace, {}).setdefault(sid, [])
        if room not in rooms:
            rooms.append(room)

    def basic_leave_room(self, sid: Any, namespace: Any, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        rooms = self._rooms_of.get(namespace, {}).get(sid)
        if rooms is not None and room in rooms:
            rooms.remove(room)

    def basic_disconnect(self, sid: Any, namespace: Any, **kwargs: Any) -> None:
        rooms = self._rooms_of.get(namespace, {}).pop(sid, None)
        if rooms is None:
            super().basic_disconnect(sid, namespace, **kwargs)  # type: ignore[misc]
            return
        if namespace not in self.rooms:
            return
        # python-socketio 5.18's basic_disconnect, with the sid's rooms from the index.
        for room in rooms:
            super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]



class RoomEvents:
    """Calls `occupied(room)` when a room gets its first member here, `vacated(room)` when its last leaves.

    Every join and leave of python-socketio's managers goes through
    `basic_enter_room` / `basic_leave_room` (disconnects and `close_room`
    included), so these two overrides see them all.
    """

    rooms: dict[str, dict[str, Any]]
    _occupied: RoomCallback | None = None
    _vacated: RoomCallback | None = None

    def watch_rooms(self, occupied: RoomCallback, vacated: RoomCallback) -> None:
        self._occupied, self._vacated = occupied, vacated

    def basic_enter_room(self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None) -> None:
        fresh = room is not None and room not in self.rooms.get(namespace, {})
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        if fresh and self._occupied is not None:
            assert room is not None
            self._occupied(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        held = room is not None and room in self.rooms.get(namespace, {})
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        if held and room not in self.rooms.get(namespace, {}) and self._vacated is not None:
            assert room is not None
            self._vacated(room)


class RedisManager(IndexedRooms, RoomEvents, socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        channel = namespace(settings).manager_channel
        super().__init__(url=settings.redis_url, channel=channel)
        self.timeout = settings.redis_timeout
        self.cluster = is_cluster(settings.redis_url)
        self.subscription = Subscription("manager", settings.redis_url, sharded=[channel],
                                         timeout=settings.redis_timeout, retry_max=settings.redis_retry_max,
                                         on_up=self._resumed)
        # Manager messages through Redis, for /metrics (our own come back to us too).
        self.received = 0
        self.published = 0
        # Emits whose copy for the other pods was lost to a Redis outage.
        self.publish_dropped = 0
        self._dropped_this_outage = 0
        self.recovery = settings.recovery_window > 0

    @property
    def listening(self) -> bool:
        return bool(self.subscription.connected)

    def links(self) -> list[RedisLink]:
        return [RedisLink("manager", lambda: self.listening, lambda: self.subscription.reconnects)]

    def dropped(self) -> int | None:
        """Emits that reached only this pod's clients because Redis was down."""
        return self.publish_dropped

    def messages(self) -> tuple[int, int] | None:
        return self.received, self.published

    async def close(self) -> None:
        """Close the publishing connection; the listener's closes with its task."""
        redis: Client | None = getattr(self, "redis", None)
        if redis is not None:
            await redis.aclose()

    def _redis_connect(self) -> None:
        # Publishing only: the listener has its own connection (`Subscription`).
        self.redis: Client = client(self.redis_url, self.timeout)
        self.connected = True

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        # Replaces the stock loop (1 s doubling to 60 s, an error line per attempt).
        async with contextlib.aclosing(self.subscription.messages()) as messages:
            async for message in messages:
                self.received += 1
                if message["type"] == "smessage":
                    message["type"] = "message"  # what python-socketio's `_listen` looks for
                yield message

    async def _resumed(self) -> None:
        if self._dropped_this_outage:
            logger.info("manager: %d emits to other pods were dropped while Redis was away", self._dropped_this_outage)
        self._dropped_this_outage = 0

    async def _handle_emit(self, message: Any) -> None:
        if self.recovery and isinstance(message, dict) and not message.get("binary"):
            message["data"] = offset_safe(message.get("data"))
        await super()._handle_emit(message)

    async def _publish(self, data: Any) -> None:
        if data.get("method") == "emit" and self._local_sid(data.get("room"), data.get("namespace")):
            return
        if not self.listening:
            self._dropped()
            return
        try:
            if not self.connected:
                self._redis_connect()
            if self.cluster:
                await self.redis.spublish(self.channel, self.json.dumps(data))
            else:
                await self.redis.publish(self.channel, self.json.dumps(data))
            self.published += 1
        except REDIS_ERRORS as exc:
            # The listener notices the outage too and owns the reconnect; this emit is lost.
            logger.warning("manager: publish failed (%s); this emit reached this pod's clients only",
                        exc.__class__.__name__)
            self._dropped()

    def _local_sid(self, room: Any, namespace: Any) -> bool:
        return isinstance(room, str) and self.is_connected(room, namespace or "/")

    def _dropped(self) -> None:
        self.publish_dropped += 1
        self._dropped_this_outage += 1


def offset_safe(data: Any) -> Any:
    """A published emit's `data` whose arguments do not end in a string (that would pass for an offset).

    python-socketio sends a list of two or more items as that many arguments,
    a one-item list as its item, anything else as one argument.
    """
    args = (data if len(data) > 1 else data[:1]) if isinstance(data, list) else [data]
    if args and isinstance(args[-1], str):
        return [*args, None]
    return data


class MemoryManager(IndexedRooms, RoomEvents, socketio.AsyncManager):  # type: ignore[misc]
    """Embedded mode: python-socketio's in-process manager; this process is the whole cluster."""

    listening = True

    def links(self) -> list[RedisLink]:
        return []

    def dropped(self) -> int | None:
        return None

    def messages(self) -> tuple[int, int] | None:
        return None

    async def close(self) -> None:
        pass
