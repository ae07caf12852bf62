"""The asset catalog: which assets exist, their decimals, their catalog spelling.

`REALTIME_ASSETS` spells it `NAME:DECIMALS[:STALE_AFTER],...` (`parse_assets`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    decimals: int
    stale_after: float | None = None  # seconds; None: REALTIME_STALE_AFTER


def parse_assets(value: str) -> tuple[Asset, ...]:
    """Parse the catalog `NAME:DECIMALS[:STALE_AFTER],...`; names are stored upper-case."""
    assets: list[Asset] = []
    seen: set[str] = set()
    for item in (part.strip() for part in value.split(",") if part.strip()):
        name, sep, decimals = item.partition(":")
        decimals, _, stale = decimals.partition(":")
        name = name.strip().upper()
        if not sep or not name or not decimals.strip().isdigit():
            raise ValueError(f"expected NAME:DECIMALS, got {item!r}")
        if not all(c.isalnum() or c in "_-." for c in name) or len(name) > 64:
            raise ValueError(f"asset name {name!r} may hold only letters, digits, '_', '-', '.'")
        places = int(decimals)
        if places > 18:
            raise ValueError(f"decimals of {name} must be 0..18, got {places}")
        if name in seen:
            raise ValueError(f"asset {name} is listed twice")
        seen.add(name)
        assets.append(Asset(name, places, _stale_after(name, stale) if stale else None))
    if not assets:
        raise ValueError("the catalog is empty")
    return tuple(assets)


def _stale_after(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise ValueError(f"stale-after of {name} must be 0 < seconds <= 86400, got {value!r}")
    return seconds


class Catalog:
    """Assets by name; look-ups are case-insensitive and answer in catalog spelling."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self._assets = {asset.name.upper(): asset for asset in assets}

    def get(self, name: str) -> Asset | None:
        return self._assets.get(name.upper())

    def __iter__(self) -> Iterator[Asset]:
        return iter(self._assets.values())

    def __len__(self) -> int:
        return len(self._assets)

    @property
    def names(self) -> list[str]:
        return [asset.name for asset in self]
