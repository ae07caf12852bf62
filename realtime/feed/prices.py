"""Validating feed ticks and keeping the latest price of every asset.

`PriceBook.accept_all` is the single gate between the feed and the clients:
a message is parsed (`parsing`: integer or decimal-string prices, float
`ts`), checked against the asset's halt (`status`), numbered (`sequence`:
the same `seq` on every pod, feed restarts recognised) and judged by the
price band (`band`). What passes is stored as the snapshot new subscribers
get and returned for fan-out, in order: usually one tick, none while the band
holds one back, two when a held tick is confirmed, inside the message's
`Verdict` (with what ingest must count or share: a held tick the band dropped,
a feed restart). Anything else raises `TickRejected` with an outcome that
ingest counts. A halt or resume message changes the asset's status and lets
nothing through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.catalog import Catalog
from realtime.feed import parsing
from realtime.feed.band import Band
from realtime.feed.parsing import NumberRefused
from realtime.feed.sequence import OutOfOrder, Sequencer
from realtime.feed.status import Statuses
from realtime.feed.tiers import Tiers
from realtime.protocol import PriceStatus, PriceUpdate, TickOutcome

logger = logging.getLogger(__name__)

# A numbering this pod accepted this many ticks of may share its restarts with other pods.
CONFIRMED = 2
# Feed control messages: {"asset", "status": ...}.
HALT, OPEN = "halted", "open"


@dataclass(slots=True)
class Verdict:
    """What the gate made of one feed message that it did not reject."""

    updates: list[PriceUpdate] = field(default_factory=list)  # to send, in order
    band_dropped: int = 0  # held ticks this message did not confirm
    restart: tuple[str, int] | None = None  # (asset, new offset): a feed restart to share with other pods


class TickRejected(Exception):
    def __init__(self, outcome: TickOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class PriceBook:
    """Latest `price:update` per asset, its numbering, band and status, and the delayed tiers."""

    def __init__(self, catalog: Catalog, *, band: float = 0.0, stale_after: float = 10.0,
                 delays: list[int] | None = None) -> None:
        self.catalog = catalog
        self.band = band
        self._latest: dict[str, PriceUpdate] = {}
        self._sequencers = {asset.name: Sequencer() for asset in catalog}
        self._bands: dict[str, Band[PriceUpdate]] = {asset.name: Band(band) for asset in catalog}
        self.statuses = Statuses({asset.name: asset.stale_after or stale_after for asset in catalog})
        self.tiers = Tiers(delays or [], {asset.name: asset.decimals for asset in catalog})

    def restart_counts(self) -> list[tuple[str, int]]:
        """Feed restarts recognised, per asset."""
        return [(asset, sequencer.restarts) for asset, sequencer in self._sequencers.items()]

    def adopt_offsets(self, offsets: dict[str, int]) -> None:
        """Number like the pods that saw earlier feed restarts (before this pod's first tick)."""
        for asset, offset in offsets.items():
            sequencer = self._sequencers.get(asset)
            if sequencer is not None and not sequencer.wire:
                sequencer.offset = offset

    def latest(self, asset: str, delay: int = 0) -> PriceUpdate | None:
        """The latest tick of `asset`; for a delayed tier, the latest at least `delay` s old."""
        return self._latest.get(asset) if not delay else self.tiers.latest(asset, delay)

    def status(self, asset: str) -> PriceStatus:
        return self.statuses.get(asset)

    def forget(self, asset: str) -> None:
        """This pod stopped hearing `asset`: no snapshot until its next tick (its numbering goes on)."""
        self._latest.pop(asset, None)

    def accept(self, raw: bytes | str) -> PriceUpdate:
        """Validate one feed tick; return the last update it let through (TickRejected if none)."""
        updates = self.accept_all(raw).updates
        if not updates:
            raise TickRejected(TickOutcome.BAND, "held back by the price band")
        return updates[-1]

    def accept_all(self, raw: bytes | str) -> Verdict:
        """Validate one feed message; return the verdict: the updates it lets through, in order, and the rest.

        No updates for a halt or resume, and while the band holds this tick back;
        a held tick that this one does not confirm is the verdict's `band_dropped`.
        """
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TickRejected(TickOutcome.MALFORMED, "not JSON") from None
        if not isinstance(message, dict):
            raise TickRejected(TickOutcome.MALFORMED, "not a JSON object")
        name = message.get("asset")
        if not isinstance(name, str):
            raise TickRejected(TickOutcome.MALFORMED, "asset must be a string")
        asset = self.catalog.get(name)
        if asset is None:
            raise TickRejected(TickOutcome.UNKNOWN, f"unknown asset {name[:64]!r}")
        if "status" in message and "bid" not in message:
            self._control(asset.name, message["status"])
            return Verdict()
        now_ms = time.time_ns() // 1_000_000
        try:
            bid = parsing.price(message.get("bid"), "bid", asset.decimals)
            ask = parsing.price(message.get("ask"), "ask", asset.decimals)
            ts = parsing.timestamp(message.get("ts"), now_ms)
            seq = parsing.sequence(message.get("seq"))
        except NumberRefused as refused:
            raise TickRejected(TickOutcome.MALFORMED, f"{asset.name}: {refused}") from None
        if bid > ask:
            raise TickRejected(TickOutcome.CROSSED, f"{asset.name}: bid {bid} > ask {ask}")
        if self.statuses.halted(asset.name):
            raise TickRejected(TickOutcome.HALTED, f"{asset.name} is halted")

        sequencer = self._sequencers[asset.name]
        try:
            wire, restart = sequencer.number(seq, ts, now_ms)
        except OutOfOrder as stale:
            raise TickRejected(TickOutcome.STALE, f"{asset.name}: {stale}") from None
        confirmed = sequencer.accepted >= CONFIRMED
        sequencer.commit(seq, ts, wire, restart)
        verdict = Verdict()
        if restart:
            # Shared with other pods only from a numbering two ticks had confirmed: a poisoned
            # seq that happened to be this pod's very first tick must not reach the pods that refused it.
            if confirmed:
                verdict.restart = (asset.name, sequencer.offset)
            logger.warning("feed: %s numbering started again (publisher restart?): seq %s, ts %s; "
                        "wire seq goes on at %d", asset.name, seq, ts, wire)
        update: PriceUpdate = {"asset": asset.name, "bid": bid, "ask": ask, "decimals": asset.decimals,
                               "seq": wire, "ts": ts if ts is not None else now_ms}
        if self.band:
            self._judge(update, verdict)
        else:
            verdict.updates.append(update)
        for update in verdict.updates:
            self._latest[asset.name] = update
            self.statuses.ticked(asset.name)
        return verdict

    def _judge(self, update: PriceUpdate, verdict: Verdict) -> None:
        """The price band's judgement into `verdict`: the ticks accepted now, in order (none while this is held)."""
        judgement = self._bands[update["asset"]].judge(update, update["bid"], update["ask"])
        if judgement.dropped is not None:
            verdict.band_dropped += 1
            held = judgement.dropped
            logger.warning("feed: dropped band tick: %s: bid %d ask %d seq %d was not confirmed",
                        held["asset"], held["bid"], held["ask"], held["seq"])
        verdict.updates.extend(judgement.accepted)

    def _control(self, asset: str, status: Any) -> None:
        if status == HALT:
            self.statuses.halt(asset)
            self._bands[asset].clear()
        elif status == OPEN:
            self.statuses.reopen(asset)
        else:
            raise TickRejected(TickOutcome.MALFORMED, f'{asset}: status must be "{HALT}" or "{OPEN}"')
