"""One contract per backend protocol, run on `memory://`, on one real Redis and on a real Redis Cluster.

Each test body speaks only the protocol (`EventLog`, `SessionStore`, `DemandStore`, `Presence`); the `backend`
fixture gives the implementation and `later(seconds)`, which moves a memory backend's clock and waits
for real on Redis, whose expiries are its own. As broadcaster's and centrifuge's backend tests do.
(The price source and the feed numbering have no memory twin to hold to the same contract: the
embedded source is the simulator, and one process needs no shared numbering.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from realtime.cluster.demand import MemoryDemandStore, RedisDemandStore
from realtime.cluster.presence import MemoryPresence, RedisPresence
from realtime.config import Settings
from realtime.events import offsets
from realtime.events.log import RedisLog
from realtime.events.memory import MemoryLog, MemorySessions
from realtime.events.sessions import RedisSessions, Session
from tests.support import SECRET, RedisServer, free_port
from tests.support.redis_cluster import RedisClusterNodes, redis_cluster

PLENTY = 1 << 20  # a byte budget no test page reaches

__all__ = ["redis_cluster"]  # a fixture


class Clock:
    """A clock the test moves: memory backends read it instead of the system's."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """Makes the implementations of one kind of backend, and lets time pass for them."""

    kind: str
    url: str | None
    clock: Clock
    made: list[Any]

    def log(self, keep: float) -> Any:
        if self.url is None:
            return self.keep(MemoryLog(keep=keep, clock=self.clock))
        return self.keep(RedisLog(self.url, f"contract-{free_port()}", keep=keep, timeout=2.0))

    def sessions(self, window: float, heartbeat: float) -> Any:
        if self.url is None:
            return self.keep(MemorySessions(window=window, heartbeat=heartbeat, clock=self.clock))
        return self.keep(RedisSessions(self.url, f"contract-{free_port()}", window=window, heartbeat=heartbeat,
                                       timeout=2.0))

    def demand(self, ttl: float) -> Any:
        if self.url is None:
            return self.keep(MemoryDemandStore())
        return self.keep(RedisDemandStore(self.url, f"contract-demand-{free_port()}", ttl=ttl, timeout=2.0))

    def presence(self, cap: int) -> Any:
        if self.url is None:
            return self.keep(MemoryPresence(cap=cap, pod="pod-a"))
        settings = Settings(redis_url=self.url, max_connections_per_user=cap, instance_id="pod-a",
                            manager_channel=f"contract-{free_port()}", jwt_secret=SECRET)
        return self.keep(RedisPresence(settings))

    def keep(self, made: Any) -> Any:
        self.made.append(made)
        return made

    async def later(self, seconds: float) -> None:
        if self.url is None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)  # Redis expires keys on its own clock: real time must pass


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.slow)])
async def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Backend]:
    url = {"memory": None, "redis": redis_server.url}.get(request.param)
    if request.param == "cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        url = nodes.url
    made: list[Any] = []
    yield Backend(request.param, url, Clock(), made)
    for part in made:
        close: Callable[[], Awaitable[None]] = (getattr(part, "close", None) or getattr(part, "aclose", None)
                                                or part.stop)
        await close()


# The event log.

async def test_log_appends_in_order_and_reads_after_an_offset(backend: Backend) -> None:
    log = backend.log(keep=60)
    assert await log.last() == offsets.ZERO
    first = await log.append("user:alice", "order:update", b'{"n":1}')
    second = await log.append("role:risk", "notification", b'"margin"')
    third = await log.append("user:alice", "order:update", b'{"n":2}')
    assert first is not None and second is not None and third is not None
    assert offsets.key(first) < offsets.key(second) < offsets.key(third)
    assert await log.last() == third
    entries, next_after = await log.read(offsets.ZERO, 0.1)
    assert next_after == third  # where the next read starts: the last entry read
    assert [(e.offset, e.room, e.event, e.data) for e in entries] == [
        (first, "user:alice", "order:update", b'{"n":1}'), (second, "role:risk", "notification", b'"margin"'),
        (third, "user:alice", "order:update", b'{"n":2}')]
    assert [e.offset for e in (await log.read(first, 0.1))[0]] == [second, third]
    assert (await log.read(third, 0.1))[0] == []


async def test_log_read_waits_for_the_next_append(backend: Backend) -> None:
    log = backend.log(keep=60)
    last = await log.last()
    reading = asyncio.create_task(log.read(last, 5))
    await asyncio.sleep(0.05)  # the read is waiting: an append must wake it, not its timeout
    offset = await log.append("user:bob", "x", b"null")
    entries, _ = await asyncio.wait_for(reading, 5)
    assert [e.offset for e in entries] == [offset]


async def test_log_history_is_per_room_between_two_offsets(backend: Backend) -> None:
    log = backend.log(keep=60)
    a1 = await log.append("user:alice", "e", b"1")
    b1 = await log.append("user:bob", "e", b"2")
    a2 = await log.append("user:alice", "e", b"3")
    a3 = await log.append("user:alice", "e", b"4")
    alice, bob, nobody = await log.history([("user:alice", a1, PLENTY), ("user:bob", offsets.ZERO, PLENTY),
                                            ("user:carol", offsets.ZERO, PLENTY)], upto=a2)
    assert [e.offset for e in alice.entries] == [a2] and not alice.more
    assert [(e.offset, e.data) for e in bob.entries] == [(b1, b"2")]
    assert nobody.entries == [] and not nobody.more
    [everything] = await log.history([("user:alice", offsets.ZERO, PLENTY)], upto=a3)
    assert [e.data for e in everything.entries] == [b"1", b"3", b"4"] and not everything.more


async def test_log_history_comes_in_pages_of_a_budget(backend: Backend) -> None:
    # A replay is read a page at a time: the oldest entries within a byte budget, at least one.
    log = backend.log(keep=60)
    appended = [await log.append("user:alice", "e", b"x" * 100) for _ in range(5)]
    [first] = await log.history([("user:alice", offsets.ZERO, 1)], upto=appended[-1])
    assert [e.offset for e in first.entries] == appended[:1] and first.more
    after, pages = offsets.ZERO, []
    while True:
        [page] = await log.history([("user:alice", after, 250)], upto=appended[-1])
        pages.append([e.offset for e in page.entries])
        after = page.entries[-1].offset
        if not page.more:
            break
    assert [o for page in pages for o in page] == appended and len(pages) > 1


async def test_log_appends_a_source_offset_once(backend: Backend) -> None:
    # The stream router appends with the source entry's id: a replay of it (another router) is refused.
    log = backend.log(keep=60)
    assert await log.append("user:alice", "e", b"1", source="100-0") is not None
    assert await log.append("user:alice", "e", b"1", source="100-0") is None
    assert await log.append("user:alice", "e", b"1", source="99-5") is None
    assert await log.append("user:alice", "e", b"2", source="100-1") is not None
    assert [e.data for e in (await log.read(offsets.ZERO, 0.1))[0]] == [b"1", b"2"]


async def test_log_forgets_what_is_older_than_it_keeps(backend: Backend) -> None:
    # A room's history (what recovery replays) is trimmed exactly; the log every pod follows is trimmed
    # at least that far (Redis trims a Stream by whole nodes, `MINID ~`), so it may still hold the old one.
    log = backend.log(keep=1)
    old = await log.append("user:alice", "e", b"old")
    await backend.later(1.5)
    new = await log.append("user:alice", "e", b"new")
    [history] = await log.history([("user:alice", offsets.ZERO, PLENTY)], upto=new)
    assert [e.offset for e in history.entries] == [new]
    assert [e.offset for e in (await log.read(offsets.ZERO, 0.1))[0]] in ([new], [old, new])


# Recoverable sessions.

async def test_sessions_are_created_loaded_and_followed(backend: Backend) -> None:
    sessions = backend.sessions(window=60, heartbeat=5)
    session = Session("alice", ("BTC_USDC_PERP",), "5-0")
    await sessions.create("pid-1", session)
    assert await sessions.load("pid-1") == session
    assert await sessions.load("pid-unknown") is None
    await sessions.update({"pid-1": ["ETH_USDC_PERP", "SOL_USDC_PERP"]}, [])
    assert await sessions.load("pid-1") == Session("alice", ("ETH_USDC_PERP", "SOL_USDC_PERP"), "5-0")
    # Following a session that is gone does not bring it back.
    await sessions.update({"pid-gone": ["BTC_USDC_PERP"]}, [])
    assert await sessions.load("pid-gone") is None


async def test_a_released_session_lasts_the_window_then_is_gone(backend: Backend) -> None:
    sessions = backend.sessions(window=1, heartbeat=1)
    await sessions.create("pid-1", Session("alice", (), "0-0"))
    await sessions.create("pid-2", Session("bob", (), "0-0"))
    await sessions.update({}, ["pid-1"])
    await backend.later(0.3)
    assert await sessions.load("pid-1") is not None
    # The other, still connected, is kept alive by the heartbeat's refresh.
    await sessions.refresh({"pid-2": Session("bob", (), "0-0")})
    await backend.later(1.2)
    assert await sessions.load("pid-1") is None
    assert await sessions.load("pid-2") == Session("bob", (), "0-0")


async def test_refresh_writes_back_a_session_that_was_lost(backend: Backend) -> None:
    # Redis restarted empty (or the memory entry expired while the pod was stalled): the heartbeat restores it.
    sessions = backend.sessions(window=1, heartbeat=1)
    session = Session("alice", ("BTC_USDC_PERP",), "7-0")
    await sessions.refresh({"pid-1": session})
    assert await sessions.load("pid-1") == session


# The demand store: every pod's subscriber counts.

async def test_demand_store_keeps_each_pods_counts(backend: Backend) -> None:
    store = backend.demand(ttl=30)
    await store.put("pod-a", {"BTC_USDC_PERP": 2, "ETH_USDC_PERP": 0})
    await store.put("pod-b", {"BTC_USDC_PERP": 1})
    assert await store.pods() == {"pod-a": {"BTC_USDC_PERP": 2, "ETH_USDC_PERP": 0}, "pod-b": {"BTC_USDC_PERP": 1}}
    # A pod's next write replaces its counts whole.
    await store.put("pod-a", {"ETH_USDC_PERP": 3})
    await store.remove("pod-b")
    assert await store.pods() == {"pod-a": {"ETH_USDC_PERP": 3}}


# Presence: the per-user connection cap.

async def test_presence_evicts_the_oldest_past_the_cap(backend: Backend) -> None:
    presence = backend.presence(cap=2)
    await presence.start()
    # Sids sort against their connect order: the oldest is the first admitted, not the smallest.
    assert await presence.admit("alice", "sid-c") == []
    assert await presence.admit("alice", "sid-b") == []
    assert await presence.admit("bob", "sid-z") == []
    [evicted] = await presence.admit("alice", "sid-a")
    assert evicted.sid == "sid-c"
    await presence.leave("alice", "sid-b")
    assert await presence.admit("alice", "sid-d") == []
    [evicted] = await presence.admit("alice", "sid-e")
    assert evicted.sid == "sid-a"
