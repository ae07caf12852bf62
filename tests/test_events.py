"""Pure logic of realtime.events: offsets, the memory:// log and sessions, stream entry parsing."""

from __future__ import annotations

import asyncio

import pytest

from realtime.engine.manager import offset_safe
from realtime.events import offsets
from realtime.events.log import Page, RedisLog
from realtime.events.memory import MemoryLog, MemorySessions
from realtime.events.router import Malformed, parse_entry
from realtime.events.sessions import Session, new_pid
from tests.support import RedisServer, free_port


def test_offsets_compare_as_numbers() -> None:
    assert offsets.key("10-0") > offsets.key("9-5")
    assert offsets.later("10-0", "9-5") == "10-0"
    assert offsets.later("7-2", "7-10") == "7-10"
    for bad in (None, 5, "", "abc", "1-", "-1", "1-2-3", "1796043006392-0 ", ["1-0"]):
        assert offsets.parse(bad) is None, bad
    assert offsets.parse("1796043006392-0") == "1796043006392-0"


def test_string_final_manager_emits_get_a_null() -> None:
    assert offset_safe("text") == ["text", None]
    assert offset_safe(["a", "b"]) == ["a", "b", None]
    assert offset_safe(["only"]) == ["only", None]
    for unchanged in ({"id": 1}, [1, 2], ["a", 1], [], None, 3):
        assert offset_safe(unchanged) == unchanged


async def test_the_memory_log_keeps_order_history_and_dedupes_sources() -> None:
    log = MemoryLog(keep=60)
    assert await log.last() == offsets.ZERO
    first = await log.append("user:a", "e", b"1")
    second = await log.append("user:b", "e", b"2")
    third = await log.append("user:a", "e", b"3")
    assert first is not None and second is not None and third is not None
    assert offsets.key(first) < offsets.key(second) < offsets.key(third)
    assert [e.data for e in (await log.read(offsets.ZERO, 0))[0]] == [b"1", b"2", b"3"]
    assert [e.data for e in (await log.read(first, 0))[0]] == [b"2", b"3"]
    assert await log.read(third, 0) == ([], third)
    [history] = await log.history([("user:a", first, 2**20)], third)
    assert [e.data for e in history.entries] == [b"3"] and not history.more
    assert await log.append("user:a", "e", b"x", source="5-0") is not None
    assert await log.append("user:a", "e", b"x", source="5-0") is None
    assert await log.append("user:a", "e", b"x", source="4-9") is None


async def test_a_memory_log_read_waits_for_the_next_append() -> None:
    log = MemoryLog(keep=60)
    reading = asyncio.create_task(log.read(offsets.ZERO, 5))
    await asyncio.sleep(0)
    await log.append("user:a", "e", b"1")
    entries, last = await asyncio.wait_for(reading, 5)
    assert [e.data for e in entries] == [b"1"] and last == entries[0].offset


async def test_memory_log_trims_by_time() -> None:
    log = MemoryLog(keep=0)
    await log.append("user:a", "e", b"1")
    await asyncio.sleep(0.01)
    await log.append("user:b", "e", b"2")
    assert [e.data for e in (await log.read(offsets.ZERO, 0))[0]] == [b"2"]
    assert await log.history([("user:a", offsets.ZERO, 2**20)], await log.last()) == [Page([], False)]


async def test_memory_sessions_expire_and_follow() -> None:
    sessions = MemorySessions(window=0.05, heartbeat=0.0)
    pid = new_pid()
    await sessions.create(pid, Session("alice", (), "1-0"))
    await sessions.update({pid: ["BTC"]}, [])
    assert await sessions.load(pid) == Session("alice", ("BTC",), "1-0")
    await sessions.update({}, [pid])
    await asyncio.sleep(0.1)
    assert await sessions.load(pid) is None
    assert len(new_pid()) >= 22 and new_pid() != new_pid()


def test_stream_entries_are_parsed_or_refused() -> None:
    assert parse_entry({b"event": b"order:update", b"user": b"42", b"data": b'{"id": 7}'}) == (
        "user:42", "order:update", b'{"id":7}')
    assert parse_entry({b"event": b"x", b"room": b"role:risk"}) == ("role:risk", "x", b"null")
    for bad in ({b"user": b"42"},
                {b"event": b"x"},
                {b"event": b"x", b"user": b"42", b"room": b"user:42"},
                {b"event": b"x", b"room": b"asset:BTC"},
                {b"event": b"price:update", b"user": b"42"},
                {b"event": b"connect", b"user": b"42"},
                {b"event": b"x", b"user": b"42", b"data": b"{nope"},
                {b"event": b"\xff", b"user": b"42"}):
        with pytest.raises(Malformed):
            parse_entry(bad)


async def test_redis_history_reads_pages_from_the_offset(redis_server: RedisServer) -> None:
    log = RedisLog(redis_server.url, f"history-{free_port()}", keep=60, timeout=2)
    try:
        appended: list[tuple[str, str]] = []
        for n in range(300):
            room = "user:a" if n % 3 else "role:b"
            offset = await log.append(room, "e|v\u00e9nt", b'{"n": %d}' % n)
            assert offset is not None
            appended.append((room, offset))
        a = [offset for room, offset in appended if room == "user:a"]
        b = [offset for room, offset in appended if room == "role:b"]
        upto = appended[-2][1]
        found_a, found_b, found_none = await log.history(
            [("user:a", a[9], 2**20), ("role:b", b[-5], 2**20), ("user:c", "0-0", 2**20)], upto)
        assert [e.offset for e in found_a.entries] == [o for o in a[10:] if offsets.key(o) <= offsets.key(upto)]
        assert [e.offset for e in found_b.entries] == [o for o in b[-4:] if offsets.key(o) <= offsets.key(upto)]
        assert found_none == Page([], False) and not found_a.more and not found_b.more
        assert found_a.entries[0].event == "e|v\u00e9nt" and found_a.entries[0].room == "user:a"
        assert found_a.entries[0].data == b'{"n": %d}' % (appended.index(("user:a", a[10])))
        assert await log.last() == appended[-1][1]

        # Pages: the oldest entries after the offset that fit the budget (at least one), then the next
        # page from where that one ended, until the last, which says there is no more.
        walked: list[str] = []
        after = a[0]
        while True:
            [page] = await log.history([("user:a", after, 300)], upto)
            assert page.entries and sum(len(e.data) + len(e.offset) + 20 for e in page.entries) < 600
            walked += [e.offset for e in page.entries]
            after = page.entries[-1].offset
            if not page.more:
                break
        assert walked == [o for o in a[1:] if offsets.key(o) <= offsets.key(upto)]
        [single] = await log.history([("user:a", a[0], 1)], upto)
        assert [e.offset for e in single.entries] == [a[1]] and single.more
    finally:
        await log.close()


async def test_the_memory_log_reads_pages_from_the_offset() -> None:
    log = MemoryLog(keep=60)
    appended = [await log.append("user:a", "e", b'{"n": %d}' % n) for n in range(50)]
    walked: list[str | None] = []
    after = offsets.ZERO
    while True:
        [page] = await log.history([("user:a", after, 100)], await log.last())
        assert 0 < len(page.entries) <= 4
        walked += [e.offset for e in page.entries]
        after = page.entries[-1].offset
        if not page.more:
            break
    assert walked == appended
