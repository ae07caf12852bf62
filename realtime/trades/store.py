"""Where pods share trade history and closed candles: Redis under one hash tag per asset, or memory.

Every pod writes every trade it hears (`append`), and a script keeps each
id once: pods hear the feed in the same order and each appends in that
order, so the first pod to append a trade has already appended the ones
before it, and the list is in feed order. Closed bars are written only by
pods that heard their whole interval (`close`, first writer wins, `HSETNX`),
and every pod uses the bar the store returns, so closed bars are the same on
every pod. A starting pod loads both before it hears the feed.

Keys (`realtime.namespace`'s state prefix, one Redis Cluster slot per asset):
`{<state>:market:<A>}:trades` (JSON trades, oldest first) and `:trade-ids`
(the same trades' ids, to drop duplicates), `{<state>:market:<A>}:candles:<interval>`
(bar start -> JSON) and `:candle-starts:<interval>` (sorted starts, to trim).
Writes happen in the background, in feed order; a Redis that is
away costs the shared copy, never the live tape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson

from realtime.backplane.connections import REDIS_ERRORS, client
from realtime.protocol import CandleEvent, TradeEvent
from realtime.waits import cancel

logger = logging.getLogger(__name__)

# KEYS: trades, trade-ids. ARGV: id, trade JSON, how many to keep.
_APPEND = """
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
local keep = tonumber(ARGV[3])
if redis.call('LLEN', KEYS[1]) > keep then
  redis.call('LTRIM', KEYS[1], -keep, -1)
  redis.call('LTRIM', KEYS[2], -keep, -1)
end
return 1
"""

# KEYS: candles, candle-starts. ARGV: start, bar JSON (or "" for a bar this pod did not see whole), keep.
_CLOSE = """
if ARGV[2] ~= '' and redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
  if over > 0 then
    for _, start in ipairs(redis.call('ZPOPMIN', KEYS[2], over)) do
      if start ~= ARGV[1] then redis.call('HDEL', KEYS[1], start) end
    end
  end
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""

# Trades taken off the queue at a time.
BATCH = 256
# Trades waiting for Redis at most: beyond, the oldest are not stored (the live tape never waits).
MAX_PENDING = 10_000


class MarketStore(Protocol):
    async def trades(self, asset: str) -> list[TradeEvent]:
        """The asset's stored trades, oldest first."""

    def append(self, trade: TradeEvent) -> None:
        """Store one trade (in the background)."""

    async def candles(self, asset: str, interval: str) -> list[CandleEvent]:
        """The asset's stored closed bars at `interval`, oldest first."""

    async def close(self, bar: CandleEvent, *, whole: bool) -> CandleEvent | None:
        """Record a closed bar (if this pod saw it `whole`); the bar the store holds for its start, if any."""

    async def aclose(self) -> None: ...


class MemoryStore:
    """Embedded mode: this process is the only pod, its own history is the shared one."""

    async def trades(self, asset: str) -> list[TradeEvent]:
        return []

    def append(self, trade: TradeEvent) -> None:
        return None

    async def candles(self, asset: str, interval: str) -> list[CandleEvent]:
        return []

    async def close(self, bar: CandleEvent, *, whole: bool) -> CandleEvent | None:
        return bar if whole else None

    async def aclose(self) -> None:
        return None


class RedisStore:
    def __init__(self, url: str, state: str, *, trades: int, candles: int, timeout: float) -> None:
        self.redis = client(url, timeout)
        self.state = state
        self.keep_trades = trades
        self.keep_candles = candles
        self._append = self.redis.register_script(_APPEND)
        self._close = self.redis.register_script(_CLOSE)
        self._pending: list[TradeEvent] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False

    def _key(self, asset: str, kind: str) -> str:
        return f"{{{self.state}:market:{asset}}}:{kind}"

    async def trades(self, asset: str) -> list[TradeEvent]:
        try:
            stored = await self.redis.lrange(self._key(asset, "trades"), 0, -1)
        except REDIS_ERRORS as exc:
            logger.warning("trades: cannot read the stored trades of %s (%s)", asset, exc.__class__.__name__)
            return []
        return [orjson.loads(item) for item in stored]

    def append(self, trade: TradeEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            del self._pending[: BATCH]
            logger.warning("trades: Redis is behind; %d trades not stored", BATCH)
        self._pending.append(trade)
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="trade-store")

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    # In feed order, one at a time: a script per trade (Redis Cluster pipelines take none).
                    for trade in batch:
                        asset = trade["asset"]
                        await self._append(keys=[self._key(asset, "trades"), self._key(asset, "trade-ids")],
                                           args=[trade["id"], orjson.dumps(trade), self.keep_trades])
                    if self._failing:
                        logger.info("trades: storing trades again")
                    self._failing = False
                except REDIS_ERRORS as exc:
                    if not self._failing:
                        logger.warning("trades: cannot store %d trades (%s); the live tape goes on", len(batch),
                                       exc.__class__.__name__)
                    self._failing = True

    async def candles(self, asset: str, interval: str) -> list[CandleEvent]:
        try:
            stored = await self.redis.hgetall(self._key(asset, f"candles:{interval}"))
        except REDIS_ERRORS as exc:
            logger.warning("candles: cannot read the stored %s bars of %s (%s)", interval, asset,
                           exc.__class__.__name__)
            return []
        bars: list[CandleEvent] = [orjson.loads(value) for value in stored.values()]
        return sorted(bars, key=lambda bar: bar["t"])

    async def close(self, bar: CandleEvent, *, whole: bool) -> CandleEvent | None:
        asset, interval = bar["asset"], bar["interval"]
        try:
            stored = await self._close(
                keys=[self._key(asset, f"candles:{interval}"), self._key(asset, f"candle-starts:{interval}")],
                args=[bar["t"], orjson.dumps(bar) if whole else "", self.keep_candles])
        except REDIS_ERRORS as exc:
            if not self._failing:  # once per outage, like the trades' writes
                logger.warning("candles: cannot store the %s bar of %s (%s); using this pod's own bars",
                               interval, asset, exc.__class__.__name__)
            self._failing = True
            return bar if whole else None
        if self._failing:
            logger.info("candles: storing bars again")
        self._failing = False
        return None if stored is None else orjson.loads(stored)

    async def aclose(self) -> None:
        await cancel(self._writer)
        await self.redis.aclose()
