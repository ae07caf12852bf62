"""Recoverable sessions: who a pid belongs to, what it subscribed to, where it began.

A session is written before the CONNECT reply that carries its pid, so it is
recoverable from the first moment (a pod killed with SIGKILL writes nothing
at disconnect), follows subscription changes (one HSET each), and expires by
itself: its TTL is the window plus one heartbeat period, refreshed for all of
a pod's sessions by one pipelined heartbeat (which writes a session whole
only when Redis lost it), and set to exactly the window at disconnect.

In Redis a session is the hash `<P>:session:{<pid>}` (`<P>`: the namespace,
see `realtime.namespace`; its own hash tag: one key, one slot) with `sub`, `subscriptions` (JSON) and `basis`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from realtime.backplane.batch import Pipelined
from realtime.backplane.connections import Client, client, pipeline
from realtime.events import offsets
from realtime.events.offsets import Offset
from realtime.protocol import MAX_RATE, MIN_RATE

# Heartbeat of one session: a fresh TTL, and the whole session written again only if Redis lost it
# (an existing one is left alone: a pod still holding a half-open connection of a session that
# recovered elsewhere must not write back its stale subscriptions). KEYS: the session.
# ARGV: TTL in ms, sub, subscriptions, basis.
KEEP = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'sub', ARGV[2], 'subscriptions', ARGV[3], 'basis', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Session pipelines in flight at once (see `RedisSessions`).
SESSION_PIPELINES = 2
# 128 random bits, url-safe.
PID_BYTES = 16
MAX_PID = 64


# A recorded subscription: the asset's name, with `~<rate>` when it was granted a maxRate.
RATE_MARK = "~"


def subscription(asset: str, rate: float | None) -> str:
    """A subscription as a session records it: `BTC_USDC_PERP` or `BTC_USDC_PERP~2`."""
    return asset if rate is None else f"{asset}{RATE_MARK}{rate:g}"


def parse_subscription(recorded: str) -> tuple[str, float | None]:
    """(asset, rate) of a recorded subscription; a damaged rate counts as none (the cap still applies)."""
    asset, _, rate = recorded.partition(RATE_MARK)
    try:
        value = float(rate) if rate else None
    except ValueError:
        value = None
    return asset, value if value is None or MIN_RATE <= value <= MAX_RATE else None


def new_pid() -> str:
    return secrets.token_urlsafe(PID_BYTES)


@dataclass(frozen=True, slots=True)
class Session:
    """What a pid recovers."""

    sub: str
    subscriptions: tuple[str, ...]
    # The log's offset when the session joined its rooms: a pid without an
    # offset recovers everything after it.
    basis: Offset


class SessionStore(Protocol):
    async def create(self, pid: str, session: Session) -> None: ...

    async def load(self, pid: str) -> Session | None:
        """The live session of `pid`, or None (unknown or expired)."""
        ...

    async def update(self, follow: Mapping[str, Sequence[str]], release: Iterable[str]) -> None:
        """Record new subscriptions of some sessions, and release others (their connection is gone:
        they live exactly the window from now), in one round trip."""
        ...

    async def refresh(self, sessions: Mapping[str, Session]) -> None:
        """Heartbeat: keep (or write again, had Redis lost them) the sessions of the connections still here."""
        ...

    async def close(self) -> None: ...


class RedisSessions:
    def __init__(self, url: str, prefix: str, *, window: float, heartbeat: float, timeout: float) -> None:
        self.prefix = prefix
        self.window_ms = int(window * 1000)
        self.ttl_ms = int((window + heartbeat) * 1000)
        self.timeout = timeout
        # Every call is bounded as a whole (a pipeline, the heartbeat), not reply by reply.
        self.redis: Client = client(url, timeout, bounded_reads=False)
        # A reconnect storm's session reads and writes share pipelines. A pipeline of one session
        # costs ~4× the client CPU per session of one of sixteen: with few in flight, the connects that
        # arrive during a round trip share the next one (a connect waits at most one more round trip).
        self._keep = self.redis.register_script(KEEP)
        self._pipelined = Pipelined(self.redis, in_flight=SESSION_PIPELINES, scripts=[self._keep], timeout=timeout)

    def key(self, pid: str) -> str:
        return f"{self.prefix}:session:{{{pid}}}"

    async def create(self, pid: str, session: Session) -> None:
        key = self.key(pid)
        fields = _fields(session)

        def queue(pipe: Any) -> None:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self.ttl_ms)

        await self._pipelined.call(queue, 2)

    async def load(self, pid: str) -> Session | None:
        key = self.key(pid)
        [fields] = await self._pipelined.call(lambda pipe: pipe.hgetall(key))
        return _session(fields)

    async def update(self, follow: Mapping[str, Sequence[str]], release: Iterable[str]) -> None:
        released = list(release)

        def queue(pipe: Any) -> None:
            for pid, subscriptions in follow.items():
                # With its TTL: were the session gone, a bare HSET would leave a key that never expires
                # (and one without `sub` is never recovered).
                pipe.hset(self.key(pid), "subscriptions", orjson.dumps(list(subscriptions)))
                pipe.pexpire(self.key(pid), self.ttl_ms)
            for pid in released:
                pipe.pexpire(self.key(pid), self.window_ms)

        # In the pipeline the connects of the moment share: one round trip for both.
        await self._pipelined.call(queue, 2 * len(follow) + len(released))

    async def refresh(self, sessions: Mapping[str, Session]) -> None:
        # The timeout once more per 10 000 sessions: a pod's whole heartbeat is one pipeline.
        bound = self.timeout * (1 + len(sessions) // 10_000)
        async with asyncio.timeout(bound), pipeline(self.redis, [self._keep]) as pipe:
            for pid, session in sessions.items():
                fields = _fields(session)
                await self._keep(keys=[self.key(pid)], client=pipe,
                                 args=[self.ttl_ms, fields["sub"], fields["subscriptions"], fields["basis"]])
            await pipe.execute()

    async def close(self) -> None:
        await self._pipelined.aclose()
        await self.redis.aclose()


def _fields(session: Session) -> dict[Any, Any]:
    return {"sub": session.sub, "subscriptions": orjson.dumps(list(session.subscriptions)), "basis": session.basis}


def _session(fields: dict[bytes, bytes]) -> Session | None:
    """A stored session, or None for a missing or damaged one."""
    try:
        sub = fields[b"sub"].decode()
        basis = offsets.parse(fields[b"basis"].decode())
        names = orjson.loads(fields[b"subscriptions"])
    except (KeyError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if basis is None or not isinstance(names, list):
        return None
    return Session(sub, tuple(name for name in names if isinstance(name, str)), basis)
