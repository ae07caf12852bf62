"""Order books (SPEC §9): the feed's snapshots and sequenced deltas, kept exact on every pod and sent as
conflated top-`depth` diffs."""
