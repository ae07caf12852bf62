"""Every swappable backend, chosen in one place by the URL in `REALTIME_REDIS_URL`.

Unset or `memory://` (embedded mode, one pod): the manager, the price
source (the simulator), the event log and its sessions, keyed state, presence,
demand and the restart offsets all live in this process. `redis://`, `rediss://` or
`redis+cluster://`: each is shared through Redis, under the deployment's
namespace (`realtime.namespace`), and the events stream gets its router.
Each backend pair sits behind one small interface in its own package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from realtime.books.control import ControlChannel, SimulatorRequests, SnapshotRequests
from realtime.cluster.demand import EXPIRY_INTERVALS, DemandStore, MemoryDemandStore, RedisDemandStore
from realtime.cluster.presence import MemoryPresence, Presence, RedisPresence
from realtime.config import Settings
from realtime.engine.manager import MemoryManager, RedisManager
from realtime.events.log import EventLog, RedisLog
from realtime.events.memory import MemoryLog, MemorySessions
from realtime.events.recovery import heartbeat_period
from realtime.events.router import StreamRouter
from realtime.events.service import retention
from realtime.events.sessions import RedisSessions, SessionStore
from realtime.events.state.memory import MemoryStates
from realtime.events.state.service import limits
from realtime.events.state.store import RedisStates, StateStore
from realtime.feed.restarts import LocalRestarts, RedisRestarts, Restarts
from realtime.feed.sources import PriceSource, RedisSource, SimulatedSource
from realtime.namespace import namespace


@dataclass(slots=True)
class Backends:
    manager: MemoryManager | RedisManager
    source: PriceSource
    restarts: Restarts
    log: EventLog
    sessions: SessionStore
    router: StreamRouter | None  # Redis only: the events stream back ends append to
    presence: Presence
    demand: DemandStore
    book_requests: SnapshotRequests  # how a broken order book asks the feed for a snapshot
    states: StateStore  # keyed state, written with the event log (in its process, or its Redis slot)


def backends(settings: Settings, *, forget: Callable[[str], None]) -> Backends:
    """The backends `settings` name; `forget(asset)` when this pod stops hearing an asset's channel."""
    keep = retention(settings)
    heartbeat = heartbeat_period(settings.recovery_window)
    cap = settings.max_connections_per_user
    if settings.embedded:
        simulator = SimulatedSource(settings)
        memory_log = MemoryLog(keep=keep)
        return Backends(
            manager=MemoryManager(),
            source=simulator,
            restarts=LocalRestarts(),
            log=memory_log,
            sessions=MemorySessions(window=settings.recovery_window, heartbeat=heartbeat),
            router=None,
            presence=MemoryPresence(cap, settings.instance_id),
            demand=MemoryDemandStore(),
            book_requests=SimulatorRequests(simulator.ask),
            states=MemoryStates(memory_log, limits(settings)),
        )
    url = settings.redis_url
    assert url is not None
    names = namespace(settings)
    log = RedisLog(url, names.state, keep=keep, timeout=settings.redis_timeout)
    return Backends(
        manager=RedisManager(settings),
        source=RedisSource(settings, forget),
        restarts=RedisRestarts(url, names.restarts, settings.redis_timeout),
        log=log,
        sessions=RedisSessions(url, names.state, window=settings.recovery_window, heartbeat=heartbeat,
                               timeout=settings.redis_timeout),
        router=StreamRouter(url, settings.events_stream, log, settings.instance_id, timeout=settings.redis_timeout,
                            retry_max=settings.redis_retry_max),
        # Without a cap there is nothing to count across pods.
        presence=RedisPresence(settings) if cap else MemoryPresence(cap, settings.instance_id),
        demand=RedisDemandStore(url, names.demand, ttl=EXPIRY_INTERVALS * settings.demand_interval,
                                timeout=settings.redis_timeout),
        book_requests=ControlChannel(settings),
        states=RedisStates(url, names.state, keep=keep, timeout=settings.redis_timeout, limits=limits(settings)),
    )
