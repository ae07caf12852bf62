"""Inbound limits: token buckets for client events and for new connections.

A connection's events pass an `EventLimiter`; new Engine.IO sessions pass an
`AddressLimiter` keyed by client address, enforced at the HTTP handshake (429,
`realtime.http.middleware`), before any per-connection state exists.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from enum import Enum

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `take()` spends one if there is one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (it then holds no information)."""
        return self.tokens + (now - self.updated) * self.rate >= self.burst

    def retry_after(self) -> float:
        """Seconds until the next token, counted from the last `take()`."""
        return 0.0 if self.tokens >= 1.0 or self.rate <= 0 else (1.0 - self.tokens) / self.rate


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # answer RATE_LIMITED
    CUT = "cut"  # sustained abuse: end the connection


class EventLimiter:
    """Per-connection event rate: a bucket for events and a second one for refusals.

    Past the first bucket events are refused (RATE_LIMITED); refusals are
    forgiven at the same rate, up to `abuse_limit`. A connection is cut only
    when it keeps overrunning that too for `abuse_window` seconds, counted from
    the first refusal after it had been forgiven everything: a one-off burst,
    however large, is refused and forgotten; a client that keeps sending at
    more than twice its rate is cut. `rate == 0` disables the limit;
    `abuse_limit == 0` never cuts.
    """

    __slots__ = ("abuse_window", "events", "overrun_since", "refusals")

    def __init__(self, rate: float, burst: int, abuse_limit: int, abuse_window: float = 0.0) -> None:
        self.events = TokenBucket(rate, burst) if rate > 0 else None
        self.refusals = TokenBucket(rate, abuse_limit) if rate > 0 and abuse_limit > 0 else None
        self.abuse_window = abuse_window
        self.overrun_since = 0.0

    def check(self, now: float | None = None) -> Verdict:
        if self.events is None:
            return Verdict.ALLOW
        now = time.monotonic() if now is None else now
        if self.events.take(now):
            return Verdict.ALLOW
        if self.refusals is None:
            return Verdict.REFUSE
        if self.refusals.full(now):
            self.overrun_since = now  # a new run of refusals begins
        if self.refusals.take(now) or now - self.overrun_since < self.abuse_window:
            return Verdict.REFUSE
        return Verdict.CUT


class AddressLimiter:
    """New connections per client address, as a token bucket per address.

    IPv6 addresses count per /64, the block one host usually controls. The
    table is bounded: buckets that refilled completely are swept once it holds
    `max_addresses`, and if that is not enough the oldest are forgotten.
    """

    def __init__(self, rate: float, burst: int, max_addresses: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}
        self.refused = 0  # for /metrics

    def allow(self, address: str) -> float | None:
        """None if `address` may connect now, else the seconds until it may."""
        if self.rate <= 0:
            return None
        key = _address_key(address)
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(now):
            return None
        self.refused += 1
        return bucket.retry_after()

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        self._buckets = {key: b for key, b in self._buckets.items() if not b.full(now)}
        # Still full (a flood from very many addresses): forget the oldest half.
        if len(self._buckets) >= self.max_addresses:
            keep = list(self._buckets.items())[len(self._buckets) // 2:]
            self._buckets = dict(keep)


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AddressGauges(Collector):
    """What /metrics shows of the per-address connection rate, read at scrape time."""

    def __init__(self, limiter: AddressLimiter) -> None:
        self.limiter = limiter

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("realtime_connect_rate_limited", "new sessions refused with 429 by the per-address "
                                  "connection rate", value=self.limiter.refused)
