"""`realtime bench`: a load generator and report for the send path (SPEC §8).

A bench run starts (or targets) a server, a redis-server and load-generator
worker processes; the workers open real Engine.IO v4 websocket connections,
authenticate with a JWT in the CONNECT packet and subscribe with an ack; the
ticker publishes prices through Redis with its publish time in `seq`; the
workers measure publish→receive latency on the same clock. Modules:
`loadgen` (the worker and its websocket client), `fleet` (the workers seen
from the bench), `ticker` (the publisher), `targets` (servers to measure),
`sampling` (CPU and RSS), `latency` (histograms), `scenarios`, `report`.
"""
