"""The Redis client factory (backplane/connections.py): commands packed by hiredis, byte for byte as redis-py."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from realtime.backplane.connections import HiredisPacking, client

COMMANDS: list[tuple[Any, ...]] = [
    ("HSET", "rt:session:{pid}", "sub", "alice", "subscriptions", b'["BTC"]', "basis", "17-0"),
    ("PEXPIRE", "rt:session:{pid}", 130_000),
    ("SET", "k", 1.5), ("SET", "k", 1e-07), ("SET", "k", 2**70), ("SET", "k", "é ✓"), ("SET", "k", b"\x00\xff"),
    ("SET", "k", memoryview(b"view")), ("CONFIG GET", "maxmemory"), ("EVALSHA", "a" * 40, 1, "key", "x" * 100_000),
]


def test_every_url_keeps_its_connection_class_and_packs_with_hiredis() -> None:
    for url, kind in [("redis://127.0.0.1:1/0", Connection), ("rediss://127.0.0.1:1/0", SSLConnection),
                      ("unix:///tmp/nowhere.sock", UnixDomainSocketConnection)]:
        connection_class = client(url, 1.0).connection_pool.connection_class
        assert issubclass(connection_class, kind) and issubclass(connection_class, HiredisPacking), url


def test_the_packed_bytes_and_refusals_are_redis_pys() -> None:
    ours = client("redis://127.0.0.1:1/0", 1.0).connection_pool.make_connection()
    theirs = Connection()
    for command in COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(map(bytes, theirs.pack_command(*command)))
    assert b"".join(ours.pack_commands(COMMANDS[:2])) == b"".join(map(bytes, theirs.pack_commands(COMMANDS[:2])))
    for bad in [True, None, object()]:
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", bad)
        with pytest.raises(DataError):
            theirs.pack_command("SET", "k", bad)
