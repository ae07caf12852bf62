"""The subscribe hook: the customer's back end decides who may subscribe to a channel.

`REALTIME_SUBSCRIBE_HOOK` receives a POST of `{"sub", "roles", "channel"}`
with `Authorization: Bearer <service JWT>` (signed with
`REALTIME_SUBSCRIBE_HOOK_SECRET`, else `REALTIME_JWT_SECRET`; `sub` the
gateway, `roles: ["service"]`, `aud: "realtime:subscribe-hook"`, one minute
long) and answers `200 {"allow": true|false, "ttl": <s>}` (a 403 is a
denial too). Answers are cached per user and channel for `ttl` (default
`REALTIME_SUBSCRIBE_HOOK_TTL`) in a bounded LRU; concurrent questions for
the same user and channel share one call.

A hook that fails (a timeout, a refused connection, another status, a body
that is not such an answer) is `UNAVAILABLE`, never an allow. After a
failure the hook is not called again for `REALTIME_SUBSCRIBE_HOOK_BREAKER`
seconds (a circuit breaker): a failing back end costs one call per period,
not one per subscribe; cached answers keep being served meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

import aiohttp
import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from realtime.metrics import Buckets, Tally, histogram
from realtime.protocol import ErrorCode, GatewayError

logger = logging.getLogger(__name__)

AUDIENCE = "realtime:subscribe-hook"
MAX_TTL = 86_400.0
MAX_ANSWER_BYTES = 4096
# Hook latency: a millisecond to the longest timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAILURES = ("timeout", "error", "status", "malformed", "breaker")  # a failure's reason, the metric label


class HookFailure(Exception):
    """The hook gave no answer; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SubscribeHook:
    def __init__(self, url: str, sign: Callable[[], str], *, timeout: float, default_ttl: float,
                 cache_size: int, breaker: float, registry: CollectorRegistry) -> None:
        self.url = url
        self.sign = sign  # a fresh service JWT
        self.timeout = timeout
        self.default_ttl = default_ttl
        self.cache_size = cache_size
        self.breaker = breaker
        self._cache: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self._calls: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._closed_until = 0.0  # monotonic time before which the hook is not called
        self._session: aiohttp.ClientSession | None = None
        # For /metrics (HookGauges), as plain numbers.
        self.calls = Tally(())
        self.answers = Tally(("allow",), ("deny",))
        self.failures = Tally(*((reason,) for reason in FAILURES))
        self.cache_hits = Tally(())
        self.latency = Buckets(LATENCY_BUCKETS)
        self.started = time.time()
        registry.register(HookGauges(self))

    async def allows(self, sub: str, roles: Iterable[str], channel: str) -> bool:
        """Whether the hook lets `sub` subscribe to `channel`; GatewayError UNAVAILABLE when it cannot say."""
        key = (sub, channel)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > now:
                self._cache.move_to_end(key)
                self.cache_hits.add()
                return cached[0]
            del self._cache[key]
        pending = self._calls.get(key)
        if pending is None:
            if now < self._closed_until:
                self.failures.add(("breaker",))
                raise GatewayError(ErrorCode.UNAVAILABLE, "the subscribe hook is failing; retry "
                                   f"in {self._closed_until - now:.0f} s")
            pending = asyncio.ensure_future(self._ask(sub, sorted(roles), channel))
            self._calls[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        try:
            return await asyncio.shield(pending)
        except HookFailure as failure:
            raise GatewayError(ErrorCode.UNAVAILABLE, f"the subscribe hook did not answer ({failure}); retry") from None

    def _settled(self, key: tuple[str, str], done: asyncio.Future[bool]) -> None:
        self._calls.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every subscriber that waited may have gone

    async def _ask(self, sub: str, roles: list[str], channel: str) -> bool:
        self.calls.add()
        started = time.monotonic()
        try:
            allow, ttl = await self._call({"sub": sub, "roles": roles, "channel": channel})
        except HookFailure as failure:
            self.failures.add((failure.reason,))
            if self.breaker > 0:
                self._closed_until = time.monotonic() + self.breaker
            logger.warning("subscribe hook failed (%s: %s); not called for %.0f s", failure.reason, failure,
                           self.breaker)
            raise
        self.latency.observe(time.monotonic() - started)
        self.answers.add(("allow" if allow else "deny",))
        self._closed_until = 0.0
        if ttl > 0:
            self._cache[(sub, channel)] = (allow, time.monotonic() + ttl)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return allow

    async def _call(self, question: dict[str, object]) -> tuple[bool, float]:
        """(allow, ttl) from the hook, or HookFailure."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {"Authorization": f"Bearer {self.sign()}", "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.post(self.url, data=orjson.dumps(question), headers=headers) as response:
                    body = await response.content.read(MAX_ANSWER_BYTES + 1)
                    status = response.status
        except TimeoutError:
            raise HookFailure("timeout", f"no answer within {self.timeout} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HookFailure("error", exc.__class__.__name__) from None
        if status == 403:
            return False, self.default_ttl
        if status != 200:
            raise HookFailure("status", f"HTTP {status}")
        try:
            answer = orjson.loads(body) if len(body) <= MAX_ANSWER_BYTES else None
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise HookFailure("malformed", 'the answer is not {"allow": true|false, "ttl": <s>}')
        ttl = answer.get("ttl", self.default_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl != ttl:
            raise HookFailure("malformed", "ttl is not a number of seconds")
        return answer["allow"], min(max(float(ttl), 0.0), MAX_TTL)

    async def close(self) -> None:
        for pending in list(self._calls.values()):
            pending.cancel()
        if self._session is not None:
            await self._session.close()


class HookGauges(Collector):
    """What /metrics shows of the subscribe hook, read at scrape time."""

    def __init__(self, hook: SubscribeHook) -> None:
        self.hook = hook

    def collect(self) -> Iterator[Metric]:
        hook = self.hook
        yield hook.calls.family("realtime_subscribe_hook_calls", "calls made to the subscribe hook")
        yield hook.answers.family("realtime_subscribe_hook_answers", "answers of the subscribe hook", ["answer"])
        yield hook.failures.family("realtime_subscribe_hook_failures", "subscribes the hook could not answer, by "
                                   "reason (breaker: not called, the hook failed recently)", ["reason"])
        yield hook.cache_hits.family("realtime_subscribe_hook_cache_hits", "subscribes answered from the hook's cache")
        yield histogram("realtime_subscribe_hook_seconds", "subscribe hook call latency", hook.latency, hook.started)
