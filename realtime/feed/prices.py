"""Validating feed ticks and keeping the latest price of every asset.

`PriceBook.accept` is the single gate between the feed and the clients: a tick
that passes it is numbered, stored as the snapshot new subscribers get, and
returned for fan-out; anything else raises `TickRejected` with an outcome that
ingest counts.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import orjson

from realtime.feed.catalog import Catalog
from realtime.protocol import PriceUpdate

# The largest integer JavaScript numbers hold exactly: prices and seq beyond it
# would be corrupted in every browser.
MAX_SAFE_INTEGER = 2**53 - 1


class TickOutcome(StrEnum):
    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    CROSSED = "crossed"
    STALE = "stale"


class TickRejected(Exception):
    def __init__(self, outcome: TickOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def _integer(message: dict[str, Any], field: str, *, required: bool) -> int | None:
    value = message.get(field)
    if value is None and not required:
        return None
    # bool is an int subclass: `true` is not a price.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise TickRejected(TickOutcome.MALFORMED, f"{field} must be a non-negative integer below 2**53")
    return value


class PriceBook:
    """Latest `price:update` per asset, and the per-asset sequence."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._latest: dict[str, PriceUpdate] = {}
        # The last seq of assets forgotten (per-asset channels let go): numbering goes on from there.
        self._stale_seq: dict[str, int] = {}

    def latest(self, asset: str) -> PriceUpdate | None:
        return self._latest.get(asset)

    def forget(self, asset: str) -> None:
        """This pod stopped hearing `asset`: no snapshot until its next tick, which may have any newer seq."""
        latest = self._latest.get(asset)
        if latest is not None:
            self._stale_seq[asset] = latest["seq"]
            del self._latest[asset]

    def accept(self, raw: bytes | str) -> PriceUpdate:
        """Validate one feed message and make it the asset's latest price."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TickRejected(TickOutcome.MALFORMED, "not JSON") from None
        if not isinstance(message, dict):
            raise TickRejected(TickOutcome.MALFORMED, "not a JSON object")
        name = message.get("asset")
        if not isinstance(name, str):
            raise TickRejected(TickOutcome.MALFORMED, "asset must be a string")
        bid = _integer(message, "bid", required=True)
        ask = _integer(message, "ask", required=True)
        ts = _integer(message, "ts", required=False)
        seq = _integer(message, "seq", required=False)
        asset = self.catalog.get(name)
        if asset is None:
            raise TickRejected(TickOutcome.UNKNOWN, f"unknown asset {name[:64]!r}")
        assert bid is not None and ask is not None
        if bid > ask:
            raise TickRejected(TickOutcome.CROSSED, f"{asset.name}: bid {bid} > ask {ask}")

        previous = self._latest.get(asset.name)
        last_seq = previous["seq"] if previous else self._stale_seq.get(asset.name, 0)
        if seq is None:
            seq = last_seq + 1  # upstream gave none: this pod numbers the ticks itself
            if seq > MAX_SAFE_INTEGER:
                raise TickRejected(TickOutcome.STALE, f"{asset.name}: seq space exhausted at {last_seq}")
        elif seq <= last_seq:
            raise TickRejected(TickOutcome.STALE, f"{asset.name}: seq {seq} is not above {last_seq}")
        update: PriceUpdate = {
            "asset": asset.name,
            "bid": bid,
            "ask": ask,
            "decimals": asset.decimals,
            "seq": seq,
            "ts": ts if ts is not None else int(time.time() * 1000),
        }
        self._latest[asset.name] = update
        return update
