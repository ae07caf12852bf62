"""The stream router: trade events that back ends append to a Redis Stream, into the log.

    XADD realtime:events * event order:update user 42 data '{"id": 7, "status": "filled"}'

Fields: `event`; `user` or `room` (`user:<sub>` / `role:<role>`); `data`,
JSON text (absent = null). Per-room order must hold while several pods run,
so routing is serialized: the pods share one consumer group (named after the
deployment's manager channel, visible in XINFO GROUPS), one pod at a time
holds a short lease (`{<P>}:router`, renewed while it routes) and routes
entries in stream order; the others stand by and take over when the lease
lapses. A new router first re-reads the group's pending entries (those a
dead router held), oldest first, then new ones. The append script records
the last routed input id and ignores an entry that is not above it (a dead
router may have appended it without acknowledging it): exactly once.

A router that was paused past its lease (a stopped VM, a long GC) and wakes
up may still read entries before it notices: the append script refuses them
(it checks the lease, which shares the log's hash tag), so it cannot append
out of order, and the current router, which checks after each read whether
another consumer holds entries below its own, claims and routes them first.
An entry is acknowledged only after the script returned. Malformed entries,
and entries whose `data` is larger than the API accepts
(`validation.MAX_DATA_BYTES`), are acknowledged, counted and logged, never
stored, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis

from realtime.backplane.connections import REDIS_ERRORS, Backoff, Client, client, pipeline
from realtime.events import offsets, validation
from realtime.events.log import RedisLog
from realtime.protocol import GatewayError

logger = logging.getLogger(__name__)

LEASE = 3.0  # seconds a silent router keeps the stream
BATCH = 200

# KEYS: the lease. ARGV: this pod, lease in ms. 1 while this pod holds the lease.
HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class Outcome(StrEnum):
    ROUTED = "routed"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"


class Malformed(ValueError):
    outcome = Outcome.MALFORMED


class TooLarge(Malformed):
    outcome = Outcome.TOO_LARGE


class StreamRouter:
    def __init__(self, url: str, stream: str, log: RedisLog, instance: str, *, timeout: float,
                 retry_max: float) -> None:
        self.stream = stream
        self.log = log
        self.group = log.keys.prefix
        self.consumer = instance
        self.lease_key = log.keys.router
        self.timeout = timeout
        self.redis: Client = client(url, timeout)
        self._hold = self.redis.register_script(HOLD)
        self.backoff = Backoff(cap=retry_max)
        self.holding = False
        # Entries of the stream by outcome (`realtime_stream_entries`).
        self.entries: Counter[str] = Counter({outcome.value: 0 for outcome in Outcome})

    async def run(self) -> None:
        """Route while this pod holds the lease, stand by otherwise; until cancelled."""
        while True:
            try:
                if not await self._hold(keys=[self.lease_key], args=[self.consumer, int(LEASE * 1000)]):
                    if self.holding:
                        logger.warning("router: lost the lease of %s to another pod", self.stream)
                    self.holding = False
                    self.backoff.reset()
                    await asyncio.sleep(LEASE / 3)
                    continue
                if not self.holding:
                    await self._create_group()
                    self.holding = True
                    logger.info("router: routing %s (group %s)", self.stream, self.group)
                    await self._route(await self._claim_pending())
                await self._route_new()
                self.backoff.reset()
            except REDIS_ERRORS as exc:
                if self.backoff.attempts == 0:
                    logger.warning("router: Redis unavailable (%s); retrying, every %.1fs at most",
                                exc.__class__.__name__, self.backoff.cap)
                self.holding = False
                await asyncio.sleep(self.backoff.next_delay())

    async def _create_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim_pending(self) -> list[Any]:
        """Take over every pending entry of the group (a dead router's, and this pod's before an outage)."""
        claimed: list[Any] = []
        start = "0-0"
        while True:
            reply: Any = await self.redis.xautoclaim(self.stream, self.group, self.consumer, min_idle_time=0,
                                                     start_id=start, count=BATCH)
            start, entries = reply[0], reply[1]
            claimed.extend(entries)
            if start in (b"0-0", "0-0") or not entries:
                return claimed

    async def _route_new(self) -> None:
        block = max(1, int(min(LEASE / 3, self.timeout / 2) * 1000))
        reply: Any = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=BATCH,
                                                 block=block)
        entries: list[Any] = reply[0][1] if reply else []
        # Entries another consumer read (a router that woke up after losing its lease) are older
        # than these: route them first, or they would come after, or never (not above the last routed).
        pending: Any = await self.redis.xpending(self.stream, self.group)
        if any(_text(c["name"]) != self.consumer and c["pending"] for c in pending.get("consumers") or ()):
            merged = {_text(entry[0]): entry for entry in [*await self._claim_pending(), *entries]}
            entries = [merged[i] for i in sorted(merged, key=offsets.key)]
        await self._route(entries)

    async def _route(self, entries: list[Any]) -> None:
        """Append each valid entry in order (one pipeline), then acknowledge what was settled."""
        if not entries:
            return
        pipe = pipeline(self.redis, [self.log.append_script])
        settled: list[Any] = []  # malformed or deleted: acknowledged whatever happens
        appending: list[Any] = []
        refused = {Outcome.MALFORMED: 0, Outcome.TOO_LARGE: 0}
        for entry_id, fields in entries:
            if fields is None:
                settled.append(entry_id)  # deleted from the stream while pending
                continue
            try:
                room, event, data = parse_entry(fields)
            except Malformed as exc:
                refused[exc.outcome] += 1
                settled.append(entry_id)
                logger.warning("router: %s entry %s in %s dropped: %s", exc.outcome.value.replace("_", " "),
                               _text(entry_id), self.stream, exc)
                continue
            appending.append(entry_id)
            await self.log.queue_append(pipe, room, event, data, source=_text(entry_id), router=self.consumer)
        results: list[Any] = await pipe.execute() if appending else []
        fenced = sum(1 for result in results if result == -1)
        duplicates = sum(1 for result in results if result is None)
        settled += [entry_id for entry_id, result in zip(appending, results, strict=True) if result != -1]
        if settled:
            await self.redis.xack(self.stream, self.group, *settled)
        self.entries[Outcome.ROUTED.value] += len(results) - duplicates - fenced
        self.entries[Outcome.DUPLICATE.value] += duplicates
        for outcome, count in refused.items():
            self.entries[outcome.value] += count
        if fenced:
            # Another pod routes now; it claims what this one read and could not append.
            logger.warning("router: lost the lease of %s while routing; %d entries left to the new router",
                        self.stream, fenced)
            self.holding = False

    async def close(self) -> None:
        if self.holding:
            # Hand the stream over at once rather than after the lease.
            try:
                if await self.redis.get(self.lease_key) == self.consumer.encode():
                    await self.redis.delete(self.lease_key)
            except REDIS_ERRORS:
                pass
        await self.redis.aclose()


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, str, bytes]:
    try:
        texts = {key.decode(): value.decode() for key, value in fields.items()}
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None
    try:
        event, room = validation.address(texts)
    except GatewayError as error:
        raise Malformed(error.message) from None
    try:
        data = orjson.dumps(orjson.loads(texts.get("data", "null")))
    except orjson.JSONDecodeError:
        raise Malformed("data is not JSON") from None
    try:
        return room, event, validation.sized(data)
    except GatewayError as error:
        raise TooLarge(error.message) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
