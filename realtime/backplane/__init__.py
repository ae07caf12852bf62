"""The Redis plumbing every other package talks to Redis through.

Named *backplane* (the shared bus behind every pod, as in a Redis
"backplane") rather than `redis`, which would shadow the redis-py library
for a reader, and rather than `cluster`, which means the pods' shared state
(`realtime.cluster`). Modules: `connections` (the one client factory, the
reconnecting subscription, the backoff), `shards` (Redis Cluster's sharded
pub/sub, one connection per shard), `liveness` (a hung Redis told from a
quiet channel), `batch` (the calls of one loop turn in one pipeline).
"""
