"""Every catalog asset's tape and candles on this pod: feed trades (and quotes) in, room events out.

Trades: each one heard is checked (`messages.parse`), kept once per id in the
asset's tape (the last `REALTIME_TRADES_HISTORY`), written to the shared store
(`store`), and sent to the room `trades:<A>` as one `trade` event, framed
once for the room by the one send path: in feed order, each once.

Candles (`candles`): each trade goes into the asset's bar at every interval;
an asset whose feed has sent no trade builds its bars from its quote's mid
(`v` "0", `n` ticks). Closed bars go through the store, which answers with
the bar every pod uses, then to the room `candles:<A>:<interval>` with
`closed: true`, and to each delayed tier's room `candles:<A>:<interval>@<d>`
once they closed `d` seconds ago. The open bar goes to the real-time room at
most once per `OPEN_EVERY` seconds, and only when it moved.

A connection's ack is read from this pod's memory with no wait between the
read and the join, so nothing is both in the ack and sent live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from decimal import Decimal

from realtime.catalog import Catalog
from realtime.feed.ingest import typed_message
from realtime.protocol import CANDLE, FEED_TRADE, TRADE, CandleEvent, PriceUpdate, TradeEvent
from realtime.rooms import candles_room, trades_room
from realtime.send.fanout import Fanout, deliver
from realtime.trades.candles import INTERVALS, Candle, Series
from realtime.trades.messages import TradeOutcome, TradeRefused, parse
from realtime.trades.store import MarketStore
from realtime.waits import together

logger = logging.getLogger(__name__)

OPEN_EVERY = 1.0  # seconds between two sends of one open bar (SPEC §9: at most once per second)
STEP = 0.2  # seconds between two looks at the open bars, the clock's closes and the delayed tiers
RETRY_PARTIAL = 1.0  # seconds a pod that saw a bar in part waits for a pod that saw it whole to store it
DROPPED = {outcome: f"trades: dropped {outcome.value} trade: %s" for outcome in TradeOutcome}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Tape:
    """One asset's last trades, and their ids to keep each once."""

    def __init__(self, keep: int) -> None:
        self.trades: deque[TradeEvent] = deque(maxlen=keep)
        self.ids: set[str] = set()

    def add(self, trade: TradeEvent) -> bool:
        if trade["id"] in self.ids:
            return False
        if len(self.trades) == self.trades.maxlen:
            self.ids.discard(self.trades[0]["id"])
        self.trades.append(trade)
        self.ids.add(trade["id"])
        return True


class Market:
    def __init__(self, catalog: Catalog, store: MarketStore, fanout: Fanout, room_size: Callable[[str], int], *,
                 keep_trades: int, keep_candles: int, delays: list[int], hears: Callable[[str], bool]) -> None:
        self.catalog = catalog
        self.store = store
        self.fanout = fanout
        self.room_size = room_size
        self.delays = [delay for delay in delays if delay > 0]  # the delayed tiers (0 is real-time)
        since = now_ms()
        self.keep_trades = keep_trades
        self.keep_candles = keep_candles
        self.hears = hears  # whether this pod hears an asset's feed now (`PriceSource.hears`)
        self.tapes = {asset.name: Tape(keep_trades) for asset in catalog}
        self.series = {(asset.name, interval): Series(asset.name, interval, keep_candles, since)
                       for asset in catalog for interval in INTERVALS}
        self.traded: set[str] = set()  # assets whose feed sends trades: their bars are built from trades only
        # Counters /metrics reads (trades.gauges).
        self.outcomes: Counter[TradeOutcome] = Counter()
        self.closes: Counter[str] = Counter()  # interval -> bars closed
        self._closing: asyncio.Queue[tuple[Series, Candle, int]] = asyncio.Queue()

    async def load(self) -> None:
        """Take the store's trades and closed bars (before hearing the feed)."""
        for asset in self.tapes:
            await self._load(asset)

    async def _load(self, asset: str) -> None:
        now = now_ms()
        tape = self.tapes[asset] = Tape(self.keep_trades)
        for trade in await self.store.trades(asset):
            tape.add(trade)
        if tape.trades:
            self.traded.add(asset)  # the feed sends its trades: bars from trades, as on the pods that heard them
        for interval in INTERVALS:
            series = self.series[asset, interval] = Series(asset, interval, self.keep_candles, now)
            for bar in await self.store.candles(asset, interval):
                series.append(bar, bar["t"] + series.length)
            for delay in self.delays:
                series.released[delay] = sum(1 for entry in series.closed if entry.closed_at + delay * 1000 <= now)

    async def ready(self, asset: str) -> None:
        """Before a client reads `asset`: a pod that was not hearing it (a per-asset channel it did not
        hold) takes the store's copy, which the pods that heard it kept, and builds bars afresh."""
        if not self.hears(asset):
            await self._load(asset)

    # The feed.

    async def accept(self, raw: bytes | str) -> bool:
        """Take one feed message if it is a trade (True), else leave it to the next reader (False)."""
        message = typed_message(raw, FEED_TRADE)
        if message is None:
            return False
        try:
            event = parse(message, self.catalog)
            if not self.tapes[event["asset"]].add(event):
                raise TradeRefused(TradeOutcome.DUPLICATE, f"{event['asset']}: trade {event['id']} was heard before")
        except TradeRefused as refused:
            self.outcomes[refused.outcome] += 1
            logger.warning(DROPPED[refused.outcome], refused.reason)
            return True
        self.outcomes[TradeOutcome.OK] += 1
        self.store.append(event)
        room = trades_room(event["asset"])
        if self.room_size(room):
            await self._deliver(room, TRADE, event)
        self._candles(event)
        return True

    def _candles(self, trade: TradeEvent) -> None:
        asset = trade["asset"]
        if asset not in self.traded:
            self.traded.add(asset)
            logger.info("candles: %s has trades: its bars are built from them", asset)
        price, qty = Decimal(trade["price"]), Decimal(trade["qty"])
        for interval in INTERVALS:
            series = self.series[asset, interval]
            closed = series.add(price, qty, trade["ts"])
            if closed is not None:
                self._closing.put_nowait((series, closed, now_ms()))

    def quote(self, update: PriceUpdate) -> None:
        """A quote tick: the mid makes the bars of an asset whose feed sends no trades."""
        asset = update["asset"]
        if asset in self.traded:
            return
        mid = Decimal(update["bid"] + update["ask"]).scaleb(-update["decimals"]) / 2
        for interval in INTERVALS:
            series = self.series[asset, interval]
            closed = series.add(mid, Decimal(0), update["ts"])
            if closed is not None:
                self._closing.put_nowait((series, closed, now_ms()))

    # Clients.

    def trades(self, asset: str, count: int) -> list[TradeEvent]:
        """The asset's last `count` trades, oldest first."""
        tape = self.tapes[asset].trades
        return list(tape)[-count:] if count else []

    def candles(self, asset: str, interval: str, count: int, delay: int) -> list[CandleEvent]:
        """The last `count` closed bars (a delayed tier's: those closed `delay` ago), then the open one."""
        series = self.series[asset, interval]
        bars = series.history(count, delay)
        if not delay:
            current = series.open_event()
            if current is not None:
                bars.append(current)
        return bars

    # Sending.

    async def _deliver(self, room: str, event: str, data: object) -> None:
        await deliver(self.fanout, room, event, data, logger, "trades")

    async def run(self) -> None:
        """Close bars through the store, and send open bars and the delayed tiers' bars, until cancelled."""
        await together(self._close_all(), self._tick())

    async def _close_all(self) -> None:
        while True:
            series, candle, closed_at = await self._closing.get()
            whole = series.whole(candle)
            bar = candle.event(series.asset, series.interval, closed=True)
            stored = await self.store.close(bar, whole=whole)
            if stored is None and not whole:
                await asyncio.sleep(RETRY_PARTIAL)
                stored = await self.store.close(bar, whole=False)
            if stored is None:
                logger.debug("candles: no pod saw the whole %s bar of %s at %d", series.interval, series.asset,
                             candle.t)
                continue
            series.append(stored, closed_at)
            self.closes[series.interval] += 1
            room = candles_room(series.asset, series.interval, 0)
            if self.room_size(room):
                await self._deliver(room, CANDLE, stored)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(STEP)
            now, clock = now_ms(), loop.time()
            for series in self.series.values():
                closed = series.expire(now)
                if closed is not None:
                    self._closing.put_nowait((series, closed, now))
                if series.changed and clock - series.sent_at >= OPEN_EVERY:
                    room = candles_room(series.asset, series.interval, 0)
                    current = series.open_event()
                    series.changed = False
                    if current is not None and self.room_size(room):
                        series.sent_at = clock
                        await self._deliver(room, CANDLE, current)
                for delay in self.delays:
                    await self._release(series, delay, now)

    async def _release(self, series: Series, delay: int, now: int) -> None:
        """Send a delayed tier's room the bars that closed at least `delay` seconds ago."""
        released = series.released.get(delay, 0)
        first = series.total - len(series.closed)  # the absolute index of the oldest bar kept
        room = candles_room(series.asset, series.interval, delay)
        while released < series.total:
            if released < first:
                released = first
                continue
            entry = series.closed[released - first]
            if entry.closed_at + delay * 1000 > now:
                break
            released += 1
            series.released[delay] = released
            if self.room_size(room):
                await self._deliver(room, CANDLE, entry.event)
        series.released[delay] = released
