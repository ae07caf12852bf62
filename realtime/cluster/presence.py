"""Presence: how many connections each user holds, across every pod.

`REALTIME_MAX_CONNECTIONS_PER_USER` caps them: when a user opens one more,
`admit` names the oldest connections past the cap, wherever they are, and
the gateway closes them with a reason. Chosen by URL behind one small
interface: `memory://` counts this process only (embedded mode, or no cap);
`redis://` counts the whole cluster.

Redis layout (prefix `{<namespace>:presence}:`, see `realtime.namespace`; the hash tag keeps
every key the admit script touches in one Redis Cluster slot):
- `user:<sub>`: sorted set of `<pod>|<sid>`, scored by connect time;
- `pod:<pod>`: set of the sids this pod holds, with a TTL the pod's
  heartbeat refreshes. `<pod>` is the instance id plus a random part, so a
  restarted pod never inherits its previous life's slots.
A slot counts only while its pod's set still holds it: a pod that dies stops
refreshing, its set expires, and its slots are pruned at the user's next
connect. Nothing leaks. While Redis is down the cap is not enforced
(connections are admitted; availability first); when Redis returns the
heartbeat writes back the pod's slots and removes those that left meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from realtime.backplane.connections import REDIS_ERRORS, client
from realtime.config import Settings
from realtime.namespace import namespace
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# A pod refreshes its slots this often; they expire after three missed beats.
HEARTBEAT = 5.0
POD_TTL = 3 * HEARTBEAT


@dataclass(frozen=True, slots=True)
class Slot:
    """One connection of a user: the pod that holds it and its Socket.IO sid."""

    pod: str
    sid: str


class Presence(Protocol):
    async def start(self) -> None:
        """Begin counting (and heartbeating, where there is one)."""

    async def stop(self) -> None:
        """Give up this pod's slots at once: it is shutting down."""

    async def admit(self, user: str, sid: str) -> list[Slot]:
        """Count a new connection; return the user's oldest connections past the cap."""

    async def leave(self, user: str, sid: str) -> None:
        """Stop counting a connection that has gone."""


class MemoryPresence:
    """This process's connections only; `cap` 0 = no cap, nothing counted."""

    def __init__(self, cap: int, pod: str) -> None:
        self.cap = cap
        self.pod = pod
        self._users: dict[str, dict[str, None]] = {}  # insertion order = connect order

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._users.clear()

    async def admit(self, user: str, sid: str) -> list[Slot]:
        if self.cap == 0:
            return []
        sids = self._users.setdefault(user, {})
        sids[sid] = None
        excess = list(sids)[: max(0, len(sids) - self.cap)]
        for old in excess:
            del sids[old]
        return [Slot(self.pod, old) for old in excess]

    async def leave(self, user: str, sid: str) -> None:
        sids = self._users.get(user)
        if sids is not None:
            sids.pop(sid, None)
            if not sids:
                del self._users[user]


# Atomic admit: add the slot, prune slots whose pod no longer holds them, evict the oldest past the cap.
# KEYS: user zset, this pod's set. ARGV: member, score, cap, sid, pod-set prefix, pod TTL.
_ADMIT = """
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local live = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local pod, sid = string.match(member, '^(.*)|([^|]*)$')
  if pod and redis.call('SISMEMBER', ARGV[5] .. pod, sid) == 1 then
    live[#live + 1] = member
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
local evicted = {}
for i = 1, #live - tonumber(ARGV[3]) do
  evicted[#evicted + 1] = live[i]
  redis.call('ZREM', KEYS[1], live[i])
end
return evicted
"""


class RedisPresence:
    """The whole cluster's connections, counted in Redis (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.cap = settings.max_connections_per_user
        self.pod = f"{settings.instance_id}:{secrets.token_hex(4)}"
        self.prefix = namespace(settings).presence
        self.redis = client(settings.redis_url, settings.redis_timeout)
        self._admit = self.redis.register_script(_ADMIT)
        self._local: dict[str, tuple[str, float]] = {}  # sid -> (user, connect time)
        self._unremoved: list[tuple[str, str]] = []  # (user, sid) that left while Redis was down
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False

    @property
    def _pod_key(self) -> str:
        return f"{self.prefix}pod:{self.pod}"

    def _user_key(self, user: str) -> str:
        return f"{self.prefix}user:{user}"

    def _member(self, sid: str) -> str:
        return f"{self.pod}|{sid}"

    async def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def stop(self) -> None:
        self._stopped = True
        await cancel(self._heartbeat)
        # Free this pod's slots now rather than after the TTL; stale members are pruned lazily.
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.delete(self._pod_key)
        self._local.clear()
        await self.redis.aclose()

    async def admit(self, user: str, sid: str) -> list[Slot]:
        if self._stopped:
            return []
        now = time.time()
        self._local[sid] = (user, now)
        if self._failing:
            return []  # don't make every connect wait on a Redis known to be down; the heartbeat retries
        try:
            members = await self._admit(
                keys=[self._user_key(user), self._pod_key],
                args=[self._member(sid), int(now * 1000), self.cap, sid, f"{self.prefix}pod:", int(POD_TTL)],
            )
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return []
        slots = []
        for raw in members:
            pod, _, old = raw.decode().rpartition("|")
            slots.append(Slot(pod, old))
        return slots

    async def leave(self, user: str, sid: str) -> None:
        if self._local.pop(sid, None) is None or self._stopped:
            return
        try:
            await self._remove([(user, sid)])
        except REDIS_ERRORS as exc:
            self._failed(exc)
            self._unremoved.append((user, sid))  # retried by the heartbeat

    async def _remove(self, slots: list[tuple[str, str]]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for user, sid in slots:
                pipe.zrem(self._user_key(user), self._member(sid))
                pipe.srem(self._pod_key, sid)
            await pipe.execute()

    async def _beat(self) -> None:
        while True:
            try:
                await self._write_slots(restore=self._failing)
                if self._failing:
                    logger.info("presence: Redis is back; %d connections counted again", len(self._local))
                self._failing = False
            except REDIS_ERRORS as exc:
                self._failed(exc)
            await asyncio.sleep(HEARTBEAT)

    async def _write_slots(self, *, restore: bool) -> None:
        """Keep this pod's set alive; after an outage, write back every slot it holds."""
        if self._unremoved:
            pending, self._unremoved = self._unremoved, []
            try:
                await self._remove(pending)
            except BaseException:
                self._unremoved.extend(pending)
                raise
        async with self.redis.pipeline(transaction=True) as pipe:
            if restore and self._local:
                # Redis may have restarted empty: the users' sets need these slots too.
                pipe.sadd(self._pod_key, *self._local)
                for sid, (user, since) in self._local.items():
                    pipe.zadd(self._user_key(user), {self._member(sid): int(since * 1000)}, nx=True)
            pipe.expire(self._pod_key, int(POD_TTL))
            await pipe.execute()

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            logger.warning("presence: Redis unavailable (%s); the per-user cap is not enforced until it is back",
                        exc.__class__.__name__)
        self._failing = True
