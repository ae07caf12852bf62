"""The rate scenarios of issue 23: what throttled clients cost, and how a pod past its ceiling degrades.

- `rates`: clients on `rates_per_client` assets, each asset ticking at
  `rates_tick_rate`: every client unthrottled, then half of them at
  `maxRate` `rates_max_rate`. Server CPU and bytes out (what the clients
  read, frames and all) of each, and the delivered rate per client of each
  half.
  Server CPU is compared over each step's publishing and its drain: a
  server that cannot keep up delivers late, and that work counts too.
- `overload`: the fan-out ladder (`overload_rates`, offered deliveries per
  second) on a pod with overload mode off (REALTIME_OVERLOAD_LAG=0) and on
  one with it on (100). Without a ladder given, the pod with overload off
  first finds its ceiling (the capacity ladder until two steps in a row
  fail: the highest step with 99 % delivered and p99 under 250 ms), and both
  pods then run 0.5, 1, 1.5 and 2 times it. Per step: p99 tick age, the spread of delivered rates across
  clients (coefficient of variation), disconnects, and the latency of
  private events published to random clients meanwhile (10 per second,
  POST /api/v1/publish).
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import statistics
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from realtime.bench.fleet import Counts, Fleet
from realtime.bench.options import Options
from realtime.bench.scenarios import Run, passed
from realtime.bench.targets import Endpoint, bench_assets, start_target
from realtime.clients.auth import mint_token

PRIVATE_EVENT = "bench:private"
PRIVATE_EVERY = 0.1  # seconds between two private events during a step
# The ladder around the ceiling, when none is given: up to twice what the pod keeps up with.
CEILING_LADDER = (0.5, 1.0, 1.5, 2.0)


async def rates(run: Run) -> dict[str, Any]:
    """All clients unthrottled, then half at maxRate: CPU and bytes out of each."""
    options = run.options
    tick_rate = options.rates_tick_rate * len(run.endpoint.assets)
    results: dict[str, Any] = {"clients": options.rates_clients, "per_client": options.rates_per_client,
                               "assets": len(run.endpoint.assets), "tick_rate_per_asset": options.rates_tick_rate,
                               "max_rate": options.rates_max_rate}
    for name, throttled in (("unthrottled", 0), ("half_throttled", options.rates_clients // 2)):
        first = run.clients
        await run.connect(options.rates_clients - throttled, options.rates_per_client)
        if throttled:
            await run.connect(throttled, options.rates_per_client, max_rate=options.rates_max_rate)
        step = await run.step(tick_rate, options.step_seconds)
        counts = await run.fleet.counts()
        step["bytes_out"] = counts.bytes
        step["bytes_out_per_s"] = round(counts.bytes / options.step_seconds)
        split = first + options.rates_clients - throttled
        numbered = [(_number(s), c) for c, s in zip(counts.counts, counts.subjects, strict=True)]
        for group, throttled_group in (("unthrottled", False), ("throttled", True)):
            delivered = [c for n, c in numbered if (n >= split) == throttled_group]
            if delivered:
                step[f"{group}_updates_per_s_per_asset"] = round(
                    statistics.mean(delivered) / options.step_seconds / options.rates_per_client, 2)
        results[name] = step
        await run.fleet.close_clients()
        run.open = 0
        run.subscribers.clear()
    full, half = results["unthrottled"], results["half_throttled"]
    # The CPU of all the step's work, the drain included: a starved unthrottled run delivers late, not less.
    if full["server_cpu_s_with_drain"] and half["server_cpu_s_with_drain"] is not None:
        results["cpu_ratio"] = round(half["server_cpu_s_with_drain"] / full["server_cpu_s_with_drain"], 3)
    if full["bytes_out"]:
        results["bytes_ratio"] = round(half["bytes_out"] / full["bytes_out"], 3)
    return results


def _number(subject: str) -> int:
    return int(subject.rpartition("-")[2])


async def overload(fleet: Fleet, options: Options, *, redis_url: str, redis_pid: int | None, cpus: Sequence[int],
                   workdir: Path, node_dir: Path, assets: int) -> dict[str, Any]:
    """The fan-out ladder on a pod with overload mode off (finding the ceiling first, if no ladder is given),
    then on one with it on."""
    results: dict[str, Any] = {"clients": options.capacity_clients, "assets": assets}
    ladder = list(options.overload_rates)
    for mode, lag in (("off", "0"), ("on", "100")):
        secret = secrets.token_urlsafe(32)
        endpoint = await start_target("gateway", redis_url=redis_url, assets=bench_assets(assets), secret=secret,
                                      cpus=cpus, workdir=workdir, node_dir=node_dir,
                                      settings={"REALTIME_OVERLOAD_LAG": lag}, cpu_limit=options.server_cpu_limit)
        run = Run(endpoint, fleet, options, redis_pid)
        try:
            connect = await run.connect(options.capacity_clients, len(endpoint.assets))
            if not ladder:
                ceiling, search = await _ceiling(run)
                results["ceiling_per_s"], results["ceiling_search"] = ceiling, search
                ladder = [round(ceiling * share) for share in CEILING_LADDER]
            steps = []
            closed = (await fleet.received()).closed  # the workers count every close since they started
            for rate in ladder:
                if not run.open:
                    break
                step = await _ladder_step(run, rate / run.open)
                step["disconnects"], closed = step["clients_closed"] - closed, step["clients_closed"]
                steps.append(step)
            results[mode] = {"overload_lag_ms": int(lag), "connect": connect, "steps": steps,
                             "overload_episodes": _metric(endpoint, "realtime_overload_episodes_total")}
        finally:
            await run.close()
            endpoint.stop()
    return results


async def _ceiling(run: Run) -> tuple[int, list[dict[str, Any]]]:
    """The capacity ladder (`--rates`) until two steps in a row fail (on a shared machine one step may fail
    for another process's burst): the highest passing step's deliveries per second (the first step's offer
    if none passed), and the steps."""
    steps: list[dict[str, Any]] = []
    ceiling = 0
    failed = 0
    for rate in run.options.capacity_rates:
        if not run.open or failed == 2:
            break
        step = await run.step(rate / run.open, run.options.step_seconds)
        step["passed"] = passed(step)
        steps.append({key: step[key] for key in ("offered_per_s", "deliveries_per_s", "delivered_pct", "p99_ms",
                                                 "server_cpu_pct", "server_wait_pct", "passed")})
        failed = 0 if step["passed"] else failed + 1
        if step["passed"]:
            ceiling = step["deliveries_per_s"]
    return ceiling or round(run.options.capacity_rates[0]), steps


async def _ladder_step(run: Run, ticks_per_second: float) -> dict[str, Any]:
    publisher = PrivateEvents(run.endpoint, run.clients)
    step = await run.step(ticks_per_second, run.options.step_seconds, during=publisher.run)
    await asyncio.sleep(1.0)  # the last private events' way back
    counts = await run.fleet.counts()
    step["rate_cv"] = _cv(counts)
    step["private_sent"] = publisher.sent
    step["private_received"] = len(counts.private_us)
    step["private_p99_ms"] = _percentile_ms(counts.private_us, 0.99)
    step["private_max_ms"] = counts.private_us[-1] / 1000 if counts.private_us else None
    return step


def _cv(counts: Counts) -> float | None:
    """Coefficient of variation of delivered updates across clients (every client has the same assets)."""
    if len(counts.counts) < 2 or not statistics.mean(counts.counts):
        return None
    return round(statistics.pstdev(counts.counts) / statistics.mean(counts.counts), 4)


def _percentile_ms(sorted_us: list[int], share: float) -> float | None:
    if not sorted_us:
        return None
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * share))] / 1000


class PrivateEvents:
    """A back end publishing a private event to a random client every PRIVATE_EVERY s, until cancelled."""

    def __init__(self, endpoint: Endpoint, clients: int) -> None:
        self.url = f"http://{endpoint.host}:{endpoint.port}/api/v1/publish"
        self.token = mint_token(endpoint.secret, "bench-backend", roles=["service"], ttl=3600)
        self.clients = clients
        self.sent = 0  # accepted (2xx), or in flight

    async def run(self) -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as session:
            while True:
                body = {"event": PRIVATE_EVENT, "user": f"bench-{random.randrange(self.clients)}",
                        "data": {"sent": time.time_ns() // 1000}}
                # Counted before the answer: one cancelled in flight at the step's end may still be stored.
                self.sent += 1
                try:
                    async with session.post(self.url, json=body, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                        if answer.status >= 300:
                            self.sent -= 1
                except (aiohttp.ClientError, TimeoutError):
                    self.sent -= 1
                await asyncio.sleep(PRIVATE_EVERY)


def _metric(endpoint: Endpoint, name: str) -> float | None:
    """One unlabelled sample from the pod's /metrics, or None."""
    try:
        with urllib.request.urlopen(f"http://{endpoint.host}:{endpoint.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None
