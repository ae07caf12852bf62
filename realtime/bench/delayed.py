"""Memory of the delayed tiers' history per asset: `python -m realtime.bench.delayed [--delay 900] [--assets 100]`.

Feeds a `PriceBook` with `REALTIME_DELAY_TIERS`-style tiers `--rate` ticks per
second per asset for a whole delay (arrival times are simulated, so it takes
seconds, not a quarter of an hour) and reports, per asset per tier, what
tracemalloc saw allocated and what `/metrics` reports
(`realtime_delayed_history_bytes`), as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

from realtime.catalog import Asset, Catalog
from realtime.feed.prices import PriceBook
from realtime.protocol import PriceUpdate


def measure(delay: int, assets: int, rate: int) -> dict[str, float]:
    catalog = Catalog(Asset(f"BENCH{i}_USD", 4) for i in range(assets))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    book = PriceBook(catalog, delays=[delay])
    start_ms = time.time_ns() // 1_000_000
    seq = 0
    # A whole delay of ticks arrives; none is released yet: the history is full.
    for step in range(delay * rate):
        arrived = start_ms + step * 1000 // rate
        for asset in catalog:
            seq += 1
            update: PriceUpdate = {"asset": asset.name, "bid": 1_000_000 + seq % 997, "ask": 1_000_010 + seq % 997,
                                   "decimals": 4, "seq": seq, "ts": arrived}
            for tier in book.tiers.tiers.values():
                tier.add(update, arrived)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    histories = [entry for entry in after.compare_to(before, "filename")
                 if entry.traceback[0].filename.endswith("tiers.py")]
    allocated = sum(entry.size_diff for entry in histories)
    reported = sum(nbytes for *_, nbytes in book.tiers.memory())
    held = sum(count for _, _, count, _ in book.tiers.memory())
    return {"delay_s": delay, "assets": assets, "ticks_per_s_per_asset": rate,
            "records_held_per_asset": held / assets,
            "reported_bytes_per_asset": reported / assets,
            "allocated_bytes_per_asset": allocated / assets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--delay", type=int, default=900)
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--rate", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.delay, args.assets, args.rate)))


if __name__ == "__main__":
    main()
