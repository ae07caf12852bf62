"""The price feed: sources (Redis or simulator), the gate (`prices`), ingest, the delayed tiers, and `realtime feed`."""
