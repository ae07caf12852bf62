"""The price band: a tick that jumps too far from the last accepted mid waits for a second opinion.

A fat-fingered or corrupted quote is one tick far from the market; a real
move is followed by more ticks near it. So a tick whose mid moves more than
`REALTIME_PRICE_BAND` (a fraction, 0 = off) from the last accepted mid is
held back. The next tick decides: within the band of the held one, it
confirms it (both are accepted, in order); otherwise the held one is dropped
and the next tick is judged on its own against the last accepted mid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def mid(bid: int, ask: int) -> float:
    return (bid + ask) / 2


def within(band: float, reference: float, value: float) -> bool:
    """Whether `value` is within `band` (a fraction) of `reference`."""
    if reference <= 0:
        return value <= 0 or band <= 0
    return abs(value - reference) <= band * reference


@dataclass(slots=True)
class Judgement(Generic[T]):
    """What the band says about one tick."""

    accepted: list[T]  # in order: a confirmed held tick first, then this one
    dropped: T | None = None  # a held tick that the next tick did not confirm
    held: bool = False  # this tick is held back


class Band(Generic[T]):
    """One asset's band: the last accepted mid and the tick held back, if any."""

    __slots__ = ("fraction", "held", "held_mid", "last_mid")

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.last_mid: float | None = None
        self.held: T | None = None
        self.held_mid = 0.0

    def judge(self, tick: T, bid: int, ask: int) -> Judgement[T]:
        value = mid(bid, ask)
        judgement: Judgement[T] = Judgement([])
        if self.held is not None:
            held, self.held = self.held, None
            if within(self.fraction, self.held_mid, value):
                judgement.accepted.append(held)
                self.last_mid = value
                judgement.accepted.append(tick)
                return judgement
            judgement.dropped = held
        if self.fraction > 0 and self.last_mid is not None and not within(self.fraction, self.last_mid, value):
            self.held, self.held_mid = tick, value
            judgement.held = True
            return judgement
        self.last_mid = value
        judgement.accepted.append(tick)
        return judgement

    def clear(self) -> None:
        """Forget the held tick (the asset was halted)."""
        self.held = None
