"""Who is connected: the `Principal` a verified token yields, or `ANONYMOUS`.

A plain value on the ground floor: the client handlers, the API, the event
log's recovery and the token memory all read it; only `clients.auth` makes one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is connected and what they may see. `sub is None` means anonymous."""

    sub: str | None
    roles: frozenset[str] = frozenset()
    assets: frozenset[str] | None = None  # None: every catalog asset
    exp: int | None = None
    delay: int = 0  # seconds: prices this connection sees are at least this old (0 = real-time)
    channels: tuple[str, ...] = ()  # the `channels` claim: channel names and `*` patterns (SPEC §10)
    max_rate: float | None = None  # price updates per second per asset this token may get (None: every tick)

    def may_see(self, asset: str) -> bool:
        return self.assets is None or asset.upper() in self.assets


ANONYMOUS = Principal(sub=None)
