"""The three scenarios of SPEC §8 / issue 5: capacity, latency, connections (and recovery, issue 11).

Each measures one target through the same steps: connect and subscribe
clients, publish ticks at a rate for a while, wait a bounded drain, then
count what arrived and when. A step's figures are plain dicts (see
`report`), so the JSON output is exactly what was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import psutil

from realtime.bench import recovery as recovery_scenario
from realtime.bench.fleet import Fleet
from realtime.bench.options import Options
from realtime.bench.sampling import CpuWindow
from realtime.bench.targets import Endpoint
from realtime.bench.ticker import Ticker

# A step passes the capacity ladder when this much arrives within the drain, this fast.
PASS_DELIVERED_PCT = 99.0
PASS_P99_MS = 250.0
# A generator process above this share of its core cannot be trusted to keep up.
SATURATED_PCT = 90.0


class Run:
    """One scenario against one target: its clients, ticker and samplers."""

    def __init__(self, endpoint: Endpoint, fleet: Fleet, options: Options, redis_pid: int | None) -> None:
        self.endpoint = endpoint
        self.fleet = fleet
        self.options = options
        self.ticker = Ticker(endpoint.redis_url, endpoint.price_channel, endpoint.assets)
        self.server = CpuWindow(endpoint.pid) if endpoint.pid is not None else None
        self.redis = CpuWindow(redis_pid) if redis_pid is not None else None
        self.bench = CpuWindow(psutil.Process().pid)
        self.clients = 0  # numbered so far (each has its own subject)
        self.open = 0  # connected and subscribed
        self.subscribers: Counter[str] = Counter()

    async def close(self) -> None:
        await self.fleet.close_clients()
        await self.ticker.close()

    async def connect(self, count: int, per_client: int, max_rate: float | None = None) -> dict[str, Any]:
        """Open `count` more clients, each subscribed to `per_client` assets (at `max_rate`); the connect figures."""
        if self.server is not None:
            self.server.start()
        self.fleet.cpu_start()
        outcome = await self.fleet.connect(
            host=self.endpoint.host, port=self.endpoint.port, path=self.endpoint.path, secret=self.endpoint.secret,
            first=self.clients, count=count, assets=self.endpoint.assets, per_client=per_client,
            concurrency=self.options.connect_concurrency, max_rate=max_rate)
        server = self.server.stop() if self.server is not None else None
        workers = self.fleet.cpu_stop()
        self.clients += count
        self.open += outcome.connected
        self.subscribers.update(outcome.subscribers)
        return {"requested": count, "connected": outcome.connected, "errors": outcome.errors,
                "seconds": round(outcome.elapsed, 3),
                "connects_per_s": round(outcome.connected / outcome.elapsed, 1) if outcome.elapsed else None,
                "server_cpu_pct": _pct(server.cpu_pct if server else None),
                "server_wait_pct": _pct(server.wait_pct if server else None),
                "server_others_pct": _pct(server.others_pct if server else None),
                # CPU per connect holds up on a busy machine, where the rate does not.
                "server_us_per_connect": _per(server.cpu_pct if server else None, outcome.elapsed,
                                              outcome.connected),
                # Includes minting the tokens, which happens before the connect clock starts.
                "worker_cpu_pct": [_pct(w.cpu_pct) for w in workers],
                "worker_wait_pct": [_pct(w.wait_pct) for w in workers]}

    async def settle(self, limit: float = 30.0) -> None:
        """Let a backlog from the previous step arrive, so it does not load the next one."""
        await self.fleet.reset(time.time_ns() // 1000)
        deadline = time.monotonic() + limit
        last = -1
        while time.monotonic() < deadline:
            stray = (await self.fleet.received()).stray
            if stray == last:
                return
            last = stray
            await asyncio.sleep(1.0)

    async def step(self, ticks_per_second: float, seconds: float,
                   during: Callable[[], Coroutine[Any, Any, None]] | None = None) -> dict[str, Any]:
        """Publish for `seconds` (with `during()` running alongside, if given), drain, and report what arrived."""
        await self.settle()
        await self.fleet.reset(time.time_ns() // 1000)
        windows = [w for w in (self.server, self.redis, self.bench) if w is not None]
        for window in windows:
            window.start()
        self.fleet.cpu_start()
        beside = asyncio.create_task(during()) if during is not None else None
        try:
            published = await self.ticker.run(ticks_per_second, seconds)
        finally:
            if beside is not None:
                beside.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beside
        server = self.server.stop() if self.server is not None else None
        redis = self.redis.stop() if self.redis is not None else None
        bench = self.bench.stop()
        workers = self.fleet.cpu_stop()
        expected = sum(n * self.subscribers[asset] for asset, n in published.items())

        # Drain: until everything arrived, or nothing more arrives, within the bound.
        deadline = time.monotonic() + self.options.drain_seconds
        received = await self.fleet.received()
        last, still_since = received.histogram.count, time.monotonic()
        while received.histogram.count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            received = await self.fleet.received()
            if received.histogram.count != last:
                last, still_since = received.histogram.count, time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break

        histogram = received.histogram
        # The work of the step whatever the machine's other load: a starved server delivers in the drain.
        drained = self.server.stop() if self.server is not None else None
        worker_cpu = [round(w.cpu_pct, 1) for w in workers]
        generator_cpu = sum(w.cpu_pct for w in workers) + bench.cpu_pct + (redis.cpu_pct if redis else 0.0)
        # A worker that ran or waited for a CPU nearly all the time was not keeping up.
        saturated = (any(w.cpu_pct + (w.wait_pct or 0.0) >= SATURATED_PCT for w in workers)
                     or generator_cpu >= SATURATED_PCT * self.options.generator_cpus)
        return {
            "offered_per_s": round(expected / seconds),
            "ticks_per_s": ticks_per_second,
            "expected": expected,
            "delivered": histogram.count,
            "delivered_pct": round(100.0 * histogram.count / expected, 2) if expected else None,
            "deliveries_per_s": round(histogram.count / seconds),
            "p50_ms": histogram.percentile_ms(0.50),
            "p99_ms": histogram.percentile_ms(0.99),
            "max_ms": histogram.max_us / 1000 if histogram.count else None,
            "server_cpu_pct": _pct(server.cpu_pct if server else None),
            # CPU time per delivery holds up on a busy machine, where latency and ceilings do not.
            "server_us_per_delivery": (round(server.cpu_pct / 100 * seconds / histogram.count * 1e6, 2)
                                       if server and histogram.count else None),
            "server_cpu_s_with_drain": round(drained.cpu_s, 2) if drained else None,
            "server_us_per_delivery_with_drain": (round(drained.cpu_s / histogram.count * 1e6, 2)
                                                  if drained and histogram.count else None),
            "server_rss_mb": round(server.rss_bytes / 2**20, 1) if server else None,
            # Time the server was ready to run but had no CPU (other work on the machine).
            "server_wait_pct": _pct(server.wait_pct if server else None),
            "server_others_pct": _pct(server.others_pct if server else None),
            "generator_cpu_pct": round(generator_cpu, 1),
            "worker_cpu_pct": worker_cpu,
            "worker_wait_pct": [_pct(w.wait_pct) for w in workers],
            "redis_cpu_pct": _pct(redis.cpu_pct if redis else None),
            "generator_saturated": saturated,
            "clients_closed": received.closed,
        }


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _per(cpu_pct: float | None, seconds: float, count: int) -> float | None:
    """Microseconds of CPU per item, from a CPU share over `seconds`."""
    return None if cpu_pct is None or not count else round(cpu_pct / 100 * seconds / count * 1e6, 1)


def passed(step: dict[str, Any]) -> bool:
    pct, p99 = step["delivered_pct"], step["p99_ms"]
    return pct is not None and p99 is not None and pct >= PASS_DELIVERED_PCT and p99 <= PASS_P99_MS


async def capacity(run: Run) -> dict[str, Any]:
    """Every client on every asset; raise the rate until < 99 % arrives or p99 > 250 ms."""
    options = run.options
    connect = await run.connect(options.capacity_clients, len(run.endpoint.assets))
    steps: list[dict[str, Any]] = []
    ceiling: dict[str, Any] | None = None
    if connect["connected"]:
        for rate in options.capacity_rates:
            step = await run.step(rate / connect["connected"], options.step_seconds)
            step["passed"] = passed(step)
            steps.append(step)
            if not step["passed"]:
                break
            ceiling = step
    return {
        "clients": options.capacity_clients, "assets": len(run.endpoint.assets), "connect": connect,
        "ceiling_per_s": ceiling["deliveries_per_s"] if ceiling else None,
        "ceiling_offered_per_s": ceiling["offered_per_s"] if ceiling else None,
        # The last passing step, or any before it, may be the generator's limit rather than the server's.
        "generator_saturated": any(s["generator_saturated"] for s in steps),
        "steps": steps,
    }


async def latency(run: Run) -> dict[str, Any]:
    """A fixed load: each client on `per_client` assets, each asset ticking at the given rates."""
    options = run.options
    connect = await run.connect(options.latency_clients, options.latency_per_client)
    steps = []
    if connect["connected"]:
        for rate in options.latency_tick_rates:
            step = await run.step(rate * len(run.endpoint.assets), options.latency_seconds)
            step["tick_rate_per_asset"] = rate
            steps.append(step)
    return {"clients": options.latency_clients, "per_client": options.latency_per_client,
            "assets": len(run.endpoint.assets), "connect": connect, "steps": steps}


async def connections(run: Run) -> dict[str, Any]:
    """RSS per idle subscribed connection and connect rate, at growing connection counts; the reconnect storm."""
    server = run.server
    await asyncio.sleep(1.0)
    baseline = server.rss() if server is not None else None
    levels = []
    storm: dict[str, Any] | None = None
    recovering: dict[str, Any] | None = None
    for level in sorted(run.options.connections):
        if level <= run.open:
            continue
        connect = await run.connect(level - run.open, 1)
        await asyncio.sleep(2.0)  # let the server finish what each connect started
        rss = server.rss() if server is not None else None
        per_connection = None
        if rss is not None and baseline is not None and run.open:
            per_connection = round((rss - baseline) / run.open / 1024, 1)
        levels.append({"connections": run.open, "connect": connect,
                       "server_rss_mb": round(rss / 2**20, 1) if rss is not None else None,
                       "rss_per_connection_kb": per_connection})
        if storm is None and 0 < run.options.storm_clients <= run.open:
            # Every asset gets a latest price: what a recovered client is sent with its subscriptions back.
            await run.ticker.prime()
            await asyncio.sleep(1.0)
            storm = await reconnect_storm(run, recover=False)
            if run.endpoint.name == "node":
                # The node target runs without connection state recovery (it needs the streams adapter).
                recovering = {"skipped": "the node target has no connection state recovery"}
            else:
                await asyncio.sleep(2.0)  # let the server finish with the storm's disconnects
                recovering = await reconnect_storm(run, recover=True)
    return {"baseline_rss_mb": round(baseline / 2**20, 1) if baseline is not None else None, "levels": levels,
            "storm": storm, "recovering_storm": recovering}


async def reconnect_storm(run: Run, *, recover: bool) -> dict[str, Any]:
    """Every open client loses its transport at once and reconnects with its token and subscription.

    With `recover` each sends the pid (and offset) of its last connection, as
    socket.io-client does, and is back when the server has restored its
    subscription (the latest price arrives); otherwise when its subscribe is
    acked. Reports the seconds until 99 % and 100 % were back, how many
    recovered, the server's CPU and its wait for a CPU (a starved server's
    storm is not its own figure), and its peak RSS (sampled every 20 ms).
    """
    server = run.server
    peak = before = server.rss() if server is not None else 0
    clients = run.open

    async def sample_peak() -> None:
        nonlocal peak
        while server is not None:
            peak = max(peak, server.rss())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_peak())
    if server is not None:
        server.start()
    started = time.monotonic()
    try:
        outcome = await run.fleet.storm(host=run.endpoint.host, port=run.endpoint.port,
                                        concurrency=run.options.storm_concurrency, recover=recover)
    finally:
        sampler.cancel()
    usage = server.stop() if server is not None else None
    usage_seconds = time.monotonic() - started
    times = outcome.times
    run.open = len(times)

    def until(share: float) -> float | None:
        needed = max(1, int(clients * share + 0.999999))
        return round(times[needed - 1], 3) if len(times) >= needed else None

    return {"clients": clients, "resubscribed": len(times), "recovered": outcome.recovered, "errors": outcome.errors,
            "seconds_to_99_pct": until(0.99), "seconds_to_100_pct": until(1.0),
            "server_cpu_pct": _pct(usage.cpu_pct if usage else None),
            "server_wait_pct": _pct(usage.wait_pct if usage else None),
            "server_others_pct": _pct(usage.others_pct if usage else None),
            # Of the whole storm (the old connections' disconnects too) per client back.
            "server_us_per_client": _per(usage.cpu_pct if usage else None, usage_seconds, len(times)),
            "server_rss_mb_before": round(before / 2**20, 1) if server is not None else None,
            "server_peak_rss_mb": round(peak / 2**20, 1) if server is not None else None}


async def recovery(run: Run) -> dict[str, Any]:
    """Connects/s fresh and recovering (a reconnect storm), Redis bytes per session and per event."""
    return await recovery_scenario.recovery(run.endpoint, clients=run.options.recovery_clients,
                                            concurrency=run.options.connect_concurrency)
