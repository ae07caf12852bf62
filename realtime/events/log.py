"""The ordered log of private events, behind a small interface.

`RedisLog` keeps it in Redis: the global log `{<P>}:log`, a Stream which
every pod's reader follows (`XREAD BLOCK`), and a history per room
`{<P>}:room:<room>` with the same entries under the same offsets, which
recovery reads. One Lua script appends an event to both, atomically, so an
offset names the same event everywhere. `<P>` is the deployment's namespace
(`realtime.namespace`: `REALTIME_NAMESPACE`, else its manager channel); the
braces are a Redis Cluster hash tag: every key the script touches lives in
one slot.

A room's history is a List (`<offset>|<len(event)>|<event><data>` per
entry), not a Stream: a Stream preallocates its first 4 KB node, so each of
100 000 users with one recent event would cost 4.7 KB, where a List costs
~180 bytes (measured with MEMORY USAGE). Both are trimmed by time, never by
count: a quiet room keeps its history for the whole window however busy the
others are, and a room with no new event expires by itself. Recovery reads
a room's history one page at a time (`PAGE`: a binary search for the
client's offset, then the oldest entries after it, up to a byte budget), so
neither the pod nor the client ever holds more of a backlog than one page.

Only the append script writes these keys; an entry of the log that is not
what it writes (a back end that XADDs to the wrong stream) is skipped,
counted in `malformed` and logged, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from realtime.backplane.batch import Pipelined
from realtime.backplane.connections import REDIS_ERRORS, Client, client, pipeline
from realtime.events import offsets, validation
from realtime.events.offsets import Offset

logger = logging.getLogger(__name__)

# The most history entries of one room in one page.
PAGE_ENTRIES = 1000

# Appends one entry to the log and to its room's history, trims both to the retention and returns the
# offset. A Lua function shared by the scripts that append (this module's and keyed state's), so an
# offset names the same event everywhere, whatever wrote it.
# log, history, keep: keys; room, event, data: the entry; keep_ms: the caller's retention.
APPEND_ENTRY = """
local function append_entry(log, history, keepkey, room, event, data, keep_ms)
  local keep = math.max(tonumber(keep_ms), tonumber(redis.call('GET', keepkey) or '0'))
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local oldest = math.max(0, now - keep)
  local id = redis.call('XADD', log, 'MINID', '~', tostring(oldest), '*',
                        'room', room, 'event', event, 'data', data)
  redis.call('RPUSH', history, id .. '|' .. #event .. '|' .. event .. data)
  while true do
    local head = redis.call('LINDEX', history, 0)
    local ms = head and tonumber(string.match(head, '^(%d+)-'))
    if not ms or ms >= oldest then break end
    redis.call('LPOP', history)
  end
  redis.call('PEXPIRE', history, keep)
  return id
end
"""

# KEYS: log, room history, last routed input id, retention (ms) the gateways asked for, the router's lease.
# ARGV: room, event, data (JSON text), retention (ms) of the caller, input id or "", the router or "".
# Returns the offset; false for an input id that is not above the last routed one; -1 for a router
# that no longer holds the lease (a paused pod that woke up: it must not append out of order).
APPEND = APPEND_ENTRY + """
local function above(a, b)
  local ams, an = string.match(a, '^(%d+)-(%d+)$')
  local bms, bn = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return true end
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams > bms end
  return tonumber(an) > tonumber(bn)
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[6] then return -1 end
local input = ARGV[5]
if input ~= '' then
  local last = redis.call('GET', KEYS[3])
  if last and not above(input, last) then return false end
end
local id = append_entry(KEYS[1], KEYS[2], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if input ~= '' then redis.call('SET', KEYS[3], input) end
return id
"""


# KEYS: a room's history. ARGV: after (ms, n), upto (ms, n), budget (bytes), most entries.
# Returns 1 when entries of (after, upto] remain past those returned, else 0; then the oldest entries of
# (after, upto], as many as fit in the budget (at least one).
PAGE = """
local function offset(raw)
  local ms, n = string.match(raw, '^(%d+)-(%d+)|')
  if not ms then return -1, -1 end
  return tonumber(ms), tonumber(n)
end
local function above(raw, ms, n)
  local rms, rn = offset(raw)
  if rms ~= ms then return rms > ms end
  return rn > n
end
local after_ms, after_n = tonumber(ARGV[1]), tonumber(ARGV[2])
local upto_ms, upto_n = tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, most = tonumber(ARGV[5]), tonumber(ARGV[6])
local lo, hi = 0, redis.call('LLEN', KEYS[1])
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if above(redis.call('LINDEX', KEYS[1], mid), after_ms, after_n) then hi = mid else lo = mid + 1 end
end
local page, count, size = {0}, 0, 0
while true do
  local raws = redis.call('LRANGE', KEYS[1], lo, lo + 63)
  if #raws == 0 then return page end
  for _, raw in ipairs(raws) do
    if above(raw, upto_ms, upto_n) then return page end
    if count > 0 and (size + #raw > budget or count >= most) then
      page[1] = 1
      return page
    end
    count, size = count + 1, size + #raw
    page[count + 1] = raw
  end
  lo = lo + #raws
end
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One private event of the log."""

    offset: Offset
    room: str
    event: str
    data: bytes  # JSON text


@dataclass(frozen=True, slots=True)
class Page:
    """The oldest entries of a room's history after an offset, as many as a budget allows."""

    entries: list[Entry]
    more: bool  # entries up to the page's end offset remain after the last one


class EventLog(Protocol):
    """Where private events are stored, in one order, for the window."""

    malformed: int  # entries read and skipped: not what the append script writes

    async def append(self, room: str, event: str, data: bytes, *, source: str | None = None) -> Offset | None:
        """Store one event; its offset, or None when `source` (an input id) was already appended."""
        ...

    async def announce_keep(self) -> None:
        """Tell appenders without a gateway's settings (the emitter) how long to keep history."""
        ...

    async def last(self) -> Offset:
        """The newest offset of the log (`0-0` when it is empty)."""
        ...

    async def read(self, after: Offset, wait: float) -> tuple[list[Entry], Offset]:
        """Entries after `after`, in order, waiting up to `wait` seconds for the first; and the offset to
        read after next (the last entry read, a skipped one included)."""
        ...

    async def history(self, queries: Sequence[tuple[str, Offset, int]], upto: Offset) -> list[Page]:
        """For each (room, after, budget): the oldest of the room's entries in (after, upto], in order, up to
        `budget` bytes (at least one entry); one round trip for all."""
        ...

    async def reset(self) -> None:
        """After a failure: start again from a fresh connection (on a cluster, a fresh view of the shards)."""

    async def close(self) -> None: ...


class Keys:
    """The Redis keys of one deployment (`prefix`: its namespace, see `realtime.namespace`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        tag = self._tag = "{" + prefix + "}"
        self.log = f"{tag}:log"
        self.routed = f"{tag}:routed"
        self.keep = f"{tag}:keep"
        self.router = f"{tag}:router"  # the stream router's lease
        self._room = f"{tag}:room:"

    def room(self, room: str) -> str:
        return self._room + room

    def state(self, room: str) -> str:
        """The hash of a keyed state (`room` = its `state:` room), in the log's slot: one script writes both."""
        return f"{self._tag}:{room}"


class RedisLog:
    """The log in Redis Streams; every call gives up after the client's timeout."""

    def __init__(self, url: str, prefix: str, *, keep: float, timeout: float) -> None:
        self.keys = Keys(prefix)
        self.keep_ms = int(keep * 1000)
        self.url = url
        self.timeout = timeout
        self.malformed = 0
        self._connect()

    def _connect(self) -> None:
        self.redis: Client = client(self.url, self.timeout)
        self._append = self.redis.register_script(APPEND)
        self._page = self.redis.register_script(PAGE)
        self._pipelined = Pipelined(self.redis, scripts=[self._append])

    async def reset(self) -> None:
        # A cluster client keeps the slot map of a master that died; a promoted replica is found afresh.
        stale = self.redis
        self._connect()
        with contextlib.suppress(*REDIS_ERRORS):
            await stale.aclose()

    async def append(self, room: str, event: str, data: bytes, *, source: str | None = None) -> Offset | None:
        # Appends of one loop turn (a burst of API publishes) share a pipeline.
        [result] = await self._pipelined.call(
            lambda pipe: self.queue_append(pipe, room, event, data, source=source))
        return None if result is None else _text(result)

    async def queue_append(self, pipe: Any, room: str, event: str, data: bytes, *, source: str | None = None,
                           router: str | None = None) -> None:
        """Add an `append` to `pipe` (a pipeline of this Redis); its reply is the offset, None (`source`
        already appended) or -1 (`router` does not hold the lease)."""
        keys = self.keys
        await self._append(keys=[keys.log, keys.room(room), keys.routed, keys.keep, keys.router],
                           args=[room, event, data, self.keep_ms, source or "", router or ""], client=pipe)

    @property
    def append_script(self) -> Any:
        """The registered append script, for pipelines of other clients that queue `queue_append`."""
        return self._append

    async def announce_keep(self) -> None:
        """Tell emitters that append without a gateway's settings how long to keep history."""
        await self.redis.set(self.keys.keep, self.keep_ms)

    async def last(self) -> Offset:
        newest: Any = await self.redis.xrevrange(self.keys.log, count=1)
        return _text(newest[0][0]) if newest else offsets.ZERO

    async def read(self, after: Offset, wait: float) -> tuple[list[Entry], Offset]:
        # Block for less than the socket timeout, which would take the wait for a hung Redis.
        block = max(1, int(min(wait, self.timeout / 2) * 1000))
        reply: Any = await self.redis.xread({self.keys.log: after}, count=1000, block=block)
        if not reply:
            return [], after
        entries = []
        for entry_id, fields in reply[0][1]:
            entry = self._checked(lambda: _log_entry(entry_id, fields))  # noqa: B023 (called at once)
            if entry is not None:
                entries.append(entry)
        return entries, _text(reply[0][1][-1][0])

    async def history(self, queries: Sequence[tuple[str, Offset, int]], upto: Offset) -> list[Page]:
        pipe = pipeline(self.redis, [self._page])
        end = offsets.key(upto)
        for room, after, budget in queries:
            start = offsets.key(after)
            await self._page(keys=[self.keys.room(room)], args=[*start, *end, budget, PAGE_ENTRIES], client=pipe)
        replies: list[Any] = await pipe.execute()
        pages = []
        for (room, _, _), reply in zip(queries, replies, strict=True):
            entries = []
            for raw in reply[1:]:
                entry = self._checked(lambda: _room_entry(room, raw))  # noqa: B023 (called at once)
                if entry is not None:
                    entries.append(entry)
            pages.append(Page(entries, bool(reply[0])))
        return pages

    def _checked(self, parse: Callable[[], Entry]) -> Entry | None:
        """`parse()`, or None (counted and logged) for an entry the append script did not write."""
        try:
            return parse()
        except (KeyError, ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            self.malformed += 1
            logger.warning("events: a malformed entry of the log was skipped (%s: %s)", exc.__class__.__name__, exc)
            return None

    async def close(self) -> None:
        await self._pipelined.aclose()
        await self.redis.aclose()


def _log_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An entry of the log stream: fields `room`, `event`, `data`."""
    return _sized(Entry(_text(entry_id), fields[b"room"].decode(), fields[b"event"].decode(), fields[b"data"]))


def _room_entry(room: str, raw: bytes) -> Entry:
    """A room history entry: `<offset>|<len(event)>|<event><data>`."""
    offset, length, rest = raw.split(b"|", 2)
    size = int(length)
    return _sized(Entry(offset.decode(), room, rest[:size].decode(), rest[size:]))


def _sized(entry: Entry) -> Entry:
    if not offsets.parse(entry.offset) or not isinstance(entry.data, bytes):
        raise ValueError("not an entry of the append script")
    if len(entry.data) > validation.MAX_DATA_BYTES:
        raise ValueError(f"data larger than {validation.MAX_DATA_BYTES} bytes")
    return entry


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
