"""One bench run: Redis, the load-generator workers, then each scenario against each target."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.bench import rates, report, scenarios
from realtime.bench.books import books
from realtime.bench.fleet import Fleet
from realtime.bench.keyed import keyed_state
from realtime.bench.options import Options
from realtime.bench.scenarios import Run
from realtime.bench.spread import spread
from realtime.bench.targets import (
    Endpoint,
    Process,
    bench_assets,
    default_node_dir,
    ensure_node_server,
    fanout_setting,
    start_redis,
    start_target,
    url_target,
    workdir,
)
from realtime.config import Settings

logger = logging.getLogger(__name__)

Scenario = Callable[[Run], Coroutine[Any, Any, dict[str, Any]]]
# The scenarios but `overload` measure the fan-out with every tick delivered: overload mode would conflate.
RAW_FANOUT = {"REALTIME_OVERLOAD_LAG": "0"}
SCENARIO_FUNCTIONS: dict[str, Scenario] = {
    "capacity": scenarios.capacity, "latency": scenarios.latency, "connections": scenarios.connections,
    "recovery": scenarios.recovery, "books": books, "rates": rates.rates,
}
# Scenarios only this gateway can run (Node's reference server has no order books and no maxRate).
GATEWAY_ONLY = frozenset({"books", "rates"})


@dataclass
class Plan:
    """What to run, where, and with which CPUs."""

    targets: list[str]
    scenarios: list[str]
    options: Options
    url: str | None = None
    settings: Settings | None = None
    assets: int = 10
    workers: int = 1
    server_cpus: list[int] = field(default_factory=list)
    generator_cpus: list[int] = field(default_factory=list)
    json_path: Path | None = None
    node_dir: Path = field(default_factory=default_node_dir)


def default_cpus() -> tuple[list[int], list[int]]:
    """The first CPU for the server, the rest for the generator (no pinning on one CPU)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return [], []
    return available[:1], available[1:]


def raise_open_files() -> int:
    """Lift the soft limit on open files to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run_bench(plan: Plan) -> dict[str, Any]:
    """Run every scenario of `plan` against every target; return the report document."""
    limit = raise_open_files()
    notes: list[str] = []
    largest = max([plan.options.capacity_clients, plan.options.latency_clients, *plan.options.connections])
    if "connections" in plan.scenarios and largest + 100 > limit:
        notes.append(f"open-file limit {limit} is below {largest} connections: expect connect errors")
    if plan.generator_cpus:
        os.sched_setaffinity(0, set(plan.generator_cpus))  # the ticker runs here, beside the workers
    if {"gateway", "stock"} <= set(plan.targets) and not fanout_setting():
        notes.append("this gateway has no REALTIME_FANOUT yet: `gateway` and `stock` are the same stock send path")
    if any(t in ("gateway", "stock") for t in plan.targets) and plan.url is None:
        notes.append("gateway targets run with overload mode off (REALTIME_OVERLOAD_LAG=0) except in the overload "
                     "scenario: the other scenarios measure every tick delivered")
        notes.append("gateway targets run `realtime serve` with REALTIME_FANOUT=direct and REALTIME_ENGINE=lean "
                     "(gateway), or both stock (stock)")

    if "node" in plan.targets and plan.url is None:
        # Before anything starts: a missing npm fails the run at once, and the report gets its versions.
        await asyncio.to_thread(ensure_node_server, plan.node_dir)
    document: dict[str, Any] = {
        "machine": report.machine(plan.node_dir), "command": " ".join(["realtime", *sys.argv[1:]]),
        "server_cpus": plan.server_cpus, "generator_cpus": plan.generator_cpus, "workers": plan.workers,
        "options": vars(plan.options), "results": {}, "notes": notes,
    }
    tmp = workdir()
    redis: Process | None = None
    redis_url = ""
    fleet: Fleet | None = None
    try:
        if plan.url is None:
            redis, redis_url = await start_redis(plan.generator_cpus, tmp)
        fleet = await Fleet.start(plan.workers, plan.generator_cpus)
        for scenario in plan.scenarios:
            if scenario == "overload":
                # Two pods of its own, overload mode on and off: only ours, only the gateway.
                if plan.url is None and "gateway" in plan.targets:
                    logger.info("bench: overload against gateway pods")
                    document["results"].setdefault("gateway", {})["overload"] = await rates.overload(
                        fleet, plan.options, redis_url=redis_url, redis_pid=redis.pid if redis else None,
                        cpus=plan.server_cpus, workdir=tmp, node_dir=plan.node_dir, assets=plan.assets)
                continue
            if scenario == "assets":
                # Its own pods (several gateways sharing channels), so: only ours, only the gateway.
                if plan.url is None and "gateway" in plan.targets:
                    logger.info("bench: assets against gateway pods")
                    document["results"].setdefault("gateway", {})["assets"] = await spread(
                        fleet, plan.options, redis_url=redis_url, redis_pid=redis.pid if redis else None,
                        cpus=plan.server_cpus, generator_cpus=plan.generator_cpus, workdir=tmp,
                        node_dir=plan.node_dir)
                continue
            if scenario == "state":
                # Its own gateway (with a subscribe hook of its own): only ours, only the gateway.
                if plan.url is None and "gateway" in plan.targets:
                    logger.info("bench: state against the gateway")
                    document["results"].setdefault("gateway", {})["state"] = await keyed_state(
                        redis_url=redis_url, cpus=plan.server_cpus, workdir=tmp, node_dir=plan.node_dir,
                        seconds=plan.options.state_seconds)
                continue
            for target in (["url"] if plan.url else plan.targets):
                if scenario in GATEWAY_ONLY and target == "node":
                    continue
                logger.info("bench: %s against %s", scenario, target)
                if plan.url is not None:
                    assert plan.settings is not None
                    endpoint: Endpoint = url_target(plan.url, plan.settings)
                else:
                    endpoint = await start_target(target, redis_url=redis_url, assets=bench_assets(plan.assets),
                                                  secret=secrets.token_urlsafe(32), cpus=plan.server_cpus,
                                                  workdir=tmp, node_dir=plan.node_dir, settings=RAW_FANOUT,
                                                  cpu_limit=plan.options.server_cpu_limit)
                run = Run(endpoint, fleet, plan.options, redis.pid if redis else None)
                try:
                    result = await SCENARIO_FUNCTIONS[scenario](run)
                finally:
                    await run.close()
                    endpoint.stop()
                document["results"].setdefault(target, {})[scenario] = result
    finally:
        if fleet is not None:
            await fleet.stop()
        if redis is not None:
            redis.stop()
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["reference"] = report.judge_reference(document["results"])
    if plan.json_path is not None:
        import json

        plan.json_path.write_text(json.dumps(document, indent=2) + "\n")
    return document


async def _until_signalled(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `work`, cancelling it on SIGTERM/SIGINT so its servers and Redis are stopped on the way out."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def main(plan: Plan) -> int:
    """Run the plan on uvloop and print the tables."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    document = asyncio.run(_until_signalled(run_bench(plan)))
    print(report.render(document))
    return 0

