"""Reconnect pacing: exponential backoff with jitter, capped."""

from __future__ import annotations

import random


class Backoff:
    """Delays between half and all of min(cap, base * 2**n) seconds; `reset()` after a success.

    Jitter keeps a fleet of pods from reconnecting to a restarted Redis in
    lock-step; the cap bounds how long a recovered Redis goes unused.
    """

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
