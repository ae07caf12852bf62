"""The price feed: catalog, sources (Redis or simulator), validation, ingest, and `realtime feed`."""
