"""What comes into the event log (issue 18, findings 5 and 8).

Every way in follows one size rule (`validation.MAX_DATA_BYTES`, what
`POST /api/v1/publish` accepts); an entry of the log that the gateway did not
write is skipped and counted, and the reader survives anything else.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import orjson
import pytest
import redis.asyncio as aioredis

from realtime.events import offsets
from realtime.events.emitter import Emitter
from realtime.events.memory import MemoryLog
from realtime.events.offsets import Offset
from realtime.events.reader import LogReader
from realtime.events.router import Malformed, TooLarge, parse_entry
from realtime.events.validation import MAX_DATA_BYTES, data_text
from realtime.protocol import ErrorCode, GatewayError
from tests.support import (
    Gateway,
    InProcessFactory,
    RedisServer,
    connected,
    eventually,
    free_port,
    http_json,
    sample,
    scrape,
    served_on_redis,
    token,
)
from tests.support.recovery import SERVICE, publish_event


def json_string(size: int) -> bytes:
    """A JSON string that is exactly `size` bytes of JSON text."""
    return b'"' + b"x" * (size - 2) + b'"'


def test_one_size_rule_for_every_way_in() -> None:
    fits, over = json_string(MAX_DATA_BYTES), json_string(MAX_DATA_BYTES + 1)
    assert data_text(orjson.loads(fits)) == fits
    with pytest.raises(GatewayError) as refused:
        data_text(orjson.loads(over))
    assert refused.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    entry = {b"event": b"order:update", b"user": b"42"}
    assert parse_entry({**entry, b"data": fits}) == ("user:42", "order:update", fits)
    with pytest.raises(TooLarge):
        parse_entry({**entry, b"data": over})
    assert issubclass(TooLarge, Malformed)


async def test_publish_accepts_data_up_to_the_rule_and_refuses_past_it(gateway: Gateway) -> None:
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        await ready(gateway, alice)
        fits = orjson.loads(json_string(MAX_DATA_BYTES))
        status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE,
                                       json={"event": "order:update", "user": "alice", "data": fits})
        assert status == 202, body
        [got] = await alice.wait_for("order:update", timeout=10)
        assert got[0] == fits
        over = orjson.loads(json_string(MAX_DATA_BYTES + 1))
        status, body = await http_json(gateway.url + "/api/v1/publish", "POST", headers=SERVICE,
                                       json={"event": "order:update", "user": "alice", "data": over})
        assert status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE", body
        assert str(MAX_DATA_BYTES) in body["error"]["message"]


async def test_the_emitter_refuses_data_past_the_rule(gateway: Gateway, redis_server: RedisServer) -> None:
    channel = gateway.env["REALTIME_MANAGER_CHANNEL"]
    async with Emitter(redis_server.url, channel=channel) as emitter:
        with pytest.raises(GatewayError) as refused:
            await emitter.emit("order:update", {"pad": "x" * MAX_DATA_BYTES}, user="alice")
        assert refused.value.code == ErrorCode.PAYLOAD_TOO_LARGE
        assert await emitter.emit("order:update", orjson.loads(json_string(MAX_DATA_BYTES)), user="alice")
    redis = aioredis.from_url(redis_server.url)
    try:
        assert await redis.xlen(log_key(gateway)) == 1  # the refused one was never stored
    finally:
        await redis.aclose()


async def test_an_oversized_stream_entry_is_acknowledged_counted_and_dropped(start_gateway: InProcessFactory,
                                                                           redis_server: RedisServer) -> None:
    stream = f"events-{free_port()}"
    gateway = await served_on_redis(start_gateway, redis_server, events_stream=stream)
    redis = aioredis.from_url(redis_server.url)
    try:
        async with connected(gateway.url, auth={"token": token("alice")}) as alice:
            await ready(gateway, alice)
            big = json.dumps({"n": 1, "pad": "x" * 1_200_000})
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": big})
            await redis.xadd(stream, {"event": "order:update", "user": "alice", "data": '{"n": 2}'})
            await alice.wait_for("order:update", timeout=10)
            assert [args[0] for args in alice.received("order:update")] == [{"n": 2}]

        async def counted() -> bool:  # the router counts once the entries are acknowledged, just after
            metrics = await scrape(gateway.url)
            return sample(metrics, "realtime_stream_entries_total", outcome="routed") == 1

        await eventually(counted)
        metrics = await scrape(gateway.url)
        assert sample(metrics, "realtime_stream_entries_total", outcome="too_large") == 1
        assert sample(metrics, "realtime_stream_entries_total", outcome="malformed") == 0
        group = gateway.env["REALTIME_MANAGER_CHANNEL"]
        assert (await redis.xpending(stream, group))["pending"] == 0  # acknowledged
        # Neither delivered nor stored: the log and alice's history hold only the two small events.
        stored: Any = await redis.xrange(log_key(gateway))
        assert len(stored) == 2 and all(len(fields[b"data"]) < 100 for _, fields in stored)
        prefix = "{" + group + "}"
        assert await redis.llen(f"{prefix}:room:user:alice") == 2
        assert "too large entry" in gateway.logs()
    finally:
        await redis.aclose()


async def test_a_malformed_log_entry_is_skipped_counted_and_the_next_event_arrives(
        gateway: Gateway, redis_server: RedisServer) -> None:
    redis = aioredis.from_url(redis_server.url)
    try:
        async with connected(gateway.url, auth={"token": token("alice")}) as alice:
            await ready(gateway, alice)
            # What a back end writes to the log by mistake, instead of the events stream.
            key = log_key(gateway)
            await redis.xadd(key, {"event": "order:update", "data": "{}"})  # no room
            await redis.xadd(key, {"room": "user:alice", "event": b"\xff\xfe", "data": "{}"})  # not UTF-8
            await redis.xadd(key, {"room": "user:alice", "event": "order:update", "data": "{nope"})  # not JSON
            await redis.xadd(key, {"room": "user:alice", "event": "order:update",
                                   "data": json_string(MAX_DATA_BYTES + 1)})  # too large
            await publish_event(gateway.url, "alice", "order:update", {"n": 1})
            [(data, offset)] = await alice.wait_for("order:update", timeout=10)
            assert data == {"n": 1} and offsets.parse(offset)
        metrics = await scrape(gateway.url)
        assert sample(metrics, "realtime_events_malformed_total") == 4
        assert sample(metrics, "realtime_events_reader_failures_total") == 0
        assert gateway.ready()
        assert "malformed entry of the log was skipped" in gateway.logs()
    finally:
        await redis.aclose()


class ShakyLog(MemoryLog):
    """A memory log whose reads fail, while `failing`, with an error no Redis outage explains."""

    def __init__(self) -> None:
        super().__init__(keep=60)
        self.failing = True

    async def read(self, after: Offset, wait: float) -> tuple[list[Any], Offset]:
        if self.failing:
            raise RuntimeError("a bug in reading the log")
        return await super().read(after, min(wait, 0.05))


async def test_the_reader_restarts_after_an_unexpected_failure_and_readiness_follows(
        caplog: pytest.LogCaptureFixture) -> None:
    log = ShakyLog()
    # No entries reach the reader while it fails, so it needs no server.
    reader = LogReader(log, cast(Any, None), with_offsets=True, retry_max=0.2, part_bytes=2**18)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: reader.failures >= 3)
        assert not reader.connected and not task.done()  # /ready follows `connected`: 503
        log.failing = False
        await eventually(lambda: reader.connected)
        assert not task.done()
        assert "the log reader failed" in caplog.text and "a bug in reading the log" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def log_key(gateway: Gateway) -> str:
    return "{" + gateway.env["REALTIME_MANAGER_CHANNEL"] + "}:log"


async def ready(gateway: Gateway, alice: Any) -> None:
    """Wait until `alice` is in her private room (a connection joins it just after its CONNECT reply)."""
    await publish_event(gateway.url, "alice", "order:ready", {})
    await alice.wait_for("order:ready", timeout=10)
