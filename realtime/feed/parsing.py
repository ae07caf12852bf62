"""Numbers on the price feed as exchanges send them: integer or decimal-string prices, float timestamps.

Prices become integers in the asset's smallest unit, exactly: a decimal
string is split at its point and never goes through a float, and a price with
more decimals than the catalog gives the asset is refused rather than rounded.
A `ts` may be a float (`time.time() * 1000`); it is truncated to integer ms.
Every refusal raises `NumberRefused` with the reason, which the price book
turns into a `malformed` drop.
"""

from __future__ import annotations

import math
import re
import time

# The largest integer JavaScript numbers hold exactly: prices and seq beyond it
# would be corrupted in every browser.
MAX_SAFE_INTEGER = 2**53 - 1
# Upstream `seq` above this is refused: the gateway keeps numbering above the
# last seq it sent when a publisher restarts (see `sequence`), and needs room
# for that below MAX_SAFE_INTEGER. A microsecond clock stays below it until 2112.
MAX_UPSTREAM_SEQ = 2**52
# A `ts` further ahead of this pod's clock than this is refused as absurd: it
# would make every honest tick after it look out of order.
MAX_FUTURE_MS = 24 * 3600 * 1000
DECIMAL = re.compile(r"(\d{1,20})(?:\.(\d{1,20}))?")


def plain(value: object) -> str:
    """A decimal as a string without padding zeros past its point: "95850.12000000" → "95850.12", "1.000" → "1"."""
    text = str(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


class NumberRefused(ValueError):
    """A feed number the gateway cannot use; the message says why."""


def price(value: object, field: str, decimals: int) -> int:
    """`value` as an integer count of 10**-decimals units: an integer, or a decimal string."""
    if isinstance(value, str):
        match = DECIMAL.fullmatch(value)
        if match is None:
            raise NumberRefused(f"{field} {value[:32]!r} is not a non-negative decimal number")
        whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
        if len(fraction) > decimals:
            raise NumberRefused(f"{field} {value!r} has more than the asset's {decimals} decimals")
        scale: int = 10**decimals
        units = int(whole) * scale + (int(fraction.ljust(decimals, "0")) if fraction else 0)
    elif isinstance(value, int) and not isinstance(value, bool):  # `true` is not a price
        units = value
    else:
        raise NumberRefused(f"{field} must be an integer or a decimal string")
    if not 0 <= units <= MAX_SAFE_INTEGER:
        raise NumberRefused(f"{field} must be non-negative and below 2**53 in the asset's smallest unit")
    return units


def price_text(units: int, decimals: int) -> str:
    """`units` as a decimal string with exactly `decimals` decimals: 958501000, 4 -> "95850.1000"."""
    if not decimals:
        return str(units)
    whole, fraction = divmod(units, 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}"


def sequence(value: object) -> int | None:
    """The upstream `seq`, if any: an integer in 0..2**52."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UPSTREAM_SEQ:
        raise NumberRefused("seq must be a non-negative integer not above 2**52")
    return value


def timestamp(value: object, now_ms: int | None = None) -> int | None:
    """The upstream `ts` in integer ms, if any: ints and floats are accepted, floats truncated.

    Refused: anything not a number, negative values, NaN and infinities, and
    values more than a day ahead of this pod's clock.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NumberRefused("ts must be a number (ms since the epoch)")
    if isinstance(value, float) and not math.isfinite(value):
        raise NumberRefused("ts must be a finite number")
    if value < 0:
        raise NumberRefused("ts must not be negative")
    ms = int(value)
    limit = (now_ms if now_ms is not None else time.time_ns() // 1_000_000) + MAX_FUTURE_MS
    if ms > limit:
        raise NumberRefused(f"ts {ms} is more than a day ahead of this pod's clock")
    return ms
