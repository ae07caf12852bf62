"""Where keyed state lives, behind a small interface: Redis here, memory in `state.memory`.

A state belongs to a user (`user:<sub>`) or a channel (`channel:<name>`) and
has a name; its updates go to the room `state:<name>:<owner room>` through
the event log, so they reach subscribers on every pod with offsets and are
replayed on recovery like any private event.

In Redis a state is the hash `{<P>}:state:<name>:<owner room>`: one field
per key (its value as JSON text) and the field `""` holding the version. It
shares the log's hash tag, so one script checks the version the write was
computed against, writes the hash and appends the `state:update` to the log
atomically: versions are consecutive and in log order. A write reads the
keys it touches, computes the change (`state.ops`), and lets the script
apply it if the version has not moved meanwhile; otherwise it computes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from realtime.backplane.connections import Client, client, pipeline
from realtime.channels import names
from realtime.events.log import APPEND_ENTRY, Keys
from realtime.events.state.ops import Change, Limits, Op, apply
from realtime.protocol import STATE_UPDATE, ErrorCode, GatewayError
from realtime.rooms import user_room

VERSION = ""  # the hash field of the version: never a key (keys are not empty)
# Writes of one state computed again when another pod wrote it between the read and the script.
ATTEMPTS = 20

# KEYS: the state, the log, the room history, the retention key.
# ARGV: the version the change was computed against, retention (ms), room, event, data, then key/JSON
# pairs ("" = delete). Returns the offset, or 0 when the version has moved.
WRITE = APPEND_ENTRY + """
if (redis.call('HGET', KEYS[1], '') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], '', tostring(tonumber(ARGV[1]) + 1))
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return append_entry(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[5], ARGV[2])
"""


@dataclass(frozen=True, slots=True)
class StateRef:
    """One state: `name` of a user's or a channel's."""

    name: str
    owner: str  # the owner's room: user:<sub> or channel:<name>

    @classmethod
    def of(cls, name: str, *, user: str | None = None, channel: str | None = None) -> StateRef:
        if channel is not None:
            return cls(name, names.room(channel))
        assert user is not None
        return cls(name, user_room(user))

    @property
    def room(self) -> str:
        return f"state:{self.name}:{self.owner}"

    def head(self) -> dict[str, Any]:
        """The fields that name the state in every payload: `name`, and `channel` for a channel's."""
        channel = names.of_room(self.owner)
        return {"name": self.name} if channel is None else {"name": self.name, "channel": channel}

    def update(self, version: int, change: Change) -> bytes:
        """The `state:update` payload, JSON."""
        return orjson.dumps({**self.head(), "version": version, "ops": change.ops})


def parse_room(room: str) -> StateRef | None:
    """The state of a `state:` room; None for any other room."""
    kind, _, rest = room.partition(":")
    name, _, owner = rest.partition(":")
    if kind != "state" or not name or not owner.startswith(("user:", "channel:")):
        return None
    return StateRef(name, owner)


class StateStore(Protocol):
    async def write(self, ref: StateRef, ops: list[Op]) -> int:
        """Apply `ops` all or nothing and publish the change; the new version. GatewayError for a refusal."""
        ...

    async def snapshot(self, ref: StateRef) -> tuple[int, dict[str, Any]]:
        """(version, items) now."""
        ...

    async def close(self) -> None: ...


class RedisStates:
    def __init__(self, url: str, prefix: str, *, keep: float, timeout: float, limits: Limits) -> None:
        self.keys = Keys(prefix)
        self.keep_ms = int(keep * 1000)
        self.limits = limits
        self.redis: Client = client(url, timeout)
        self._write = self.redis.register_script(WRITE)

    async def write(self, ref: StateRef, ops: list[Op]) -> int:
        key = self.keys.state(ref.room)
        touched = list(dict.fromkeys(op.key for op in ops))
        for _ in range(ATTEMPTS):
            pipe = pipeline(self.redis)
            pipe.hmget(key, [VERSION, *touched])
            pipe.hlen(key)
            stored, fields = await pipe.execute()
            version = int(stored[0] or 0)
            count = fields - (1 if stored[0] is not None else 0)
            change = apply(ops, dict(zip(touched, stored[1:], strict=True)), count, self.limits)
            args: list[Any] = [version, self.keep_ms, ref.room, STATE_UPDATE, ref.update(version + 1, change)]
            for field, raw in change.writes.items():
                args += [field, raw or b""]
            pipe = pipeline(self.redis, [self._write])
            await self._write(keys=[key, self.keys.log, self.keys.room(ref.room), self.keys.keep], args=args,
                              client=pipe)
            [offset] = await pipe.execute()
            if offset != 0:
                return version + 1
        raise GatewayError(ErrorCode.UNAVAILABLE, f"state {ref.name!r} is written too often at once; retry")

    async def snapshot(self, ref: StateRef) -> tuple[int, dict[str, Any]]:
        fields: Any = await self.redis.hgetall(self.keys.state(ref.room))
        version = int(fields.pop(VERSION.encode(), b"0"))
        return version, {key.decode(): orjson.loads(value) for key, value in fields.items()}

    async def close(self) -> None:
        await self.redis.aclose()
