"""What `/metrics` shows of trades and candles, read at scrape time from the counters `Market` keeps."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.trades.candles import INTERVALS
from realtime.trades.messages import TradeOutcome
from realtime.trades.service import Market


class TradeGauges(Collector):
    def __init__(self, market: Market) -> None:
        self.market = market

    def collect(self) -> Iterator[Metric]:
        trades = CounterMetricFamily("realtime_trades_ingested", "trade messages of the feed, by outcome (ok: "
                                     "kept and sent)", labels=["outcome"])
        for outcome in TradeOutcome:
            trades.add_metric([outcome.value], self.market.outcomes[outcome])
        yield trades
        closed = CounterMetricFamily("realtime_candles_closed", "candles closed (as the shared store holds them), "
                                     "by interval", labels=["interval"])
        late = CounterMetricFamily("realtime_candles_late", "trades (or ticks) older than their asset's open "
                                   "candle, left out of it, by interval", labels=["interval"])
        for interval in INTERVALS:
            closed.add_metric([interval], self.market.closes[interval])
            late.add_metric([interval], sum(series.late for (_, each), series in self.market.series.items()
                                            if each == interval))
        yield closed
        yield late
