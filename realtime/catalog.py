"""The asset catalog: which assets exist, their decimals, their catalog spelling."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from realtime.config import AssetSpec


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    decimals: int
    stale_after: float | None = None  # None: REALTIME_STALE_AFTER


class Catalog:
    """Assets by name; look-ups are case-insensitive and answer in catalog spelling."""

    def __init__(self, specs: Iterable[AssetSpec]) -> None:
        self._assets = {spec.name.upper(): Asset(spec.name, spec.decimals, spec.stale_after) for spec in specs}

    def get(self, name: str) -> Asset | None:
        return self._assets.get(name.upper())

    def __iter__(self) -> Iterator[Asset]:
        return iter(self._assets.values())

    def __len__(self) -> int:
        return len(self._assets)

    @property
    def names(self) -> list[str]:
        return [asset.name for asset in self]
