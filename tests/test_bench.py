"""`realtime bench` end to end, tiny: the report's structure and that deliveries were counted (never speed)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.harness import ROOT


async def bench(*args: str, timeout: float = 100) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "bench", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.terminate()  # the bench stops its servers on SIGTERM
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def check_steps(steps: list[dict[str, Any]]) -> None:
    assert steps
    for step in steps:
        # Every tick published reached every subscriber (nothing else loads these servers enough to lose one).
        assert step["expected"] > 0 and step["delivered"] == step["expected"], step
        assert step["delivered_pct"] == 100.0
        assert 0 <= step["p50_ms"] <= step["p99_ms"] <= step["max_ms"], step
        assert step["server_cpu_pct"] > 0 and step["server_rss_mb"] > 0
        assert step["generator_cpu_pct"] > 0 and isinstance(step["generator_saturated"], bool)


async def test_tiny_run_reports_every_scenario_for_gateway_and_node(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code, stdout, stderr = await bench(
        "--target", "gateway,node", "--clients", "20", "--rates", "400", "--step-seconds", "1",
        "--latency-clients", "20", "--latency-rates", "2", "--latency-seconds", "1",
        "--connections", "10,30", "--storm-clients", "30", "--drain-seconds", "5", "--json", str(out))
    assert code == 0, stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["machine"]["nproc"] >= 1 and document["machine"]["cpu_model"]
    assert document["command"].startswith("realtime bench --target gateway,node")
    assert set(document["results"]) == {"gateway", "node"}
    for target, results in document["results"].items():
        assert set(results) == {"capacity", "latency", "connections"}, target
        capacity = results["capacity"]
        assert capacity["connect"]["connected"] == 20
        check_steps(capacity["steps"])
        step = capacity["steps"][0]
        # Whether the step passed depends on the p99 on this (shared) machine; the ceiling follows from it.
        assert capacity["ceiling_per_s"] == (step["deliveries_per_s"] if step["passed"] else None)
        latency = results["latency"]
        check_steps(latency["steps"])
        # 20 clients × 3 of 10 assets: 6 subscribers per asset, 2 ticks/s on each of 10 assets.
        assert latency["steps"][0]["offered_per_s"] == 120
        levels = results["connections"]["levels"]
        assert [lv["connections"] for lv in levels] == [10, 30]
        assert all(lv["connect"]["errors"] == {} and lv["rss_per_connection_kb"] is not None for lv in levels)
        storm = results["connections"]["storm"]
        assert storm["clients"] == storm["resubscribed"] == 30 and storm["errors"] == {}, storm
        assert 0 < storm["seconds_to_99_pct"] <= storm["seconds_to_100_pct"], storm
        assert storm["server_peak_rss_mb"] >= storm["server_rss_mb_before"] > 0, storm
    # The table names every target and headline row.
    assert "| one core for the server, same load | gateway | node |" in stdout
    for row in ("fan-out ceiling", "p50 / p99 publish→receive", "RSS per idle subscribed connection",
                "connects/s", "reconnect storm of 30"):
        assert row in stdout


async def test_bad_arguments_get_one_clear_line() -> None:
    code, _, stderr = await bench("--target", "gateway,nginx")
    assert code == 2 and "choose from gateway, stock, node; got 'gateway,nginx'" in stderr
    code, _, stderr = await bench("--url", "http://127.0.0.1:9", "--scenario", "latency")
    assert code == 1
    assert stderr.strip() == ("realtime bench: --url needs the gateway's Redis: "
                              "set REALTIME_REDIS_URL (--redis-url)")
