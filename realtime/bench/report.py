"""The bench's output: the machine it ran on, and its figures as JSON and as tables."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _node_version() -> str | None:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _npm_version(node_dir: Path, package: str) -> str | None:
    try:
        import json

        manifest = json.loads((node_dir / "node_modules" / package / "package.json").read_text())
        return str(manifest["version"])
    except (OSError, ValueError, KeyError):
        return None


def machine(node_dir: Path) -> dict[str, Any]:
    """Where and when the figures were measured, and how busy the machine was (`node_dir`: the node target)."""
    versions = {name: metadata.version(name) for name in ("python-socketio", "python-engineio", "aiohttp", "redis")}
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "node": _node_version(),
        "versions": {**versions, "socket.io": _npm_version(node_dir, "socket.io"),
                     "@socket.io/redis-adapter": _npm_version(node_dir, "@socket.io/redis-adapter")},
    }


# A server whose cores gave more than this share of a measurement window to other processes was starved.
STARVED_WAIT_PCT = 10.0
# The target every ratio is taken against.
REFERENCE = "node"


def _windows(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measurement window of one target's server (steps, connect levels, storms)."""
    windows = [s for r in scenarios.values() if isinstance(r, dict) for s in r.get("steps", [])]
    connections = scenarios.get("connections", {})
    windows += [lv["connect"] for lv in connections.get("levels", [])]
    windows += [connections[key] for key in ("storm", "recovering_storm") if connections.get(key)]
    return windows


def _waits(scenarios: dict[str, Any]) -> list[float]:
    """How much each window of one target's server was taken by other work (% of the window).

    Other processes' CPU on the server's cores where it was measured; else the
    server's run-queue wait, which also counts its threads waiting behind each
    other (Node's helper threads share its one core) and so overstates.
    """
    waits = []
    for window in _windows(scenarios):
        taken = window.get("server_others_pct")
        if taken is None:
            taken = window.get("server_wait_pct")
        if taken is not None:
            waits.append(taken)
    return waits


def judge_reference(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Whether the reference target's figures can be compared with: None when it did not run.

    A reference whose core was busy with other work measured the machine, not
    itself: no ratio is taken against it.
    """
    if REFERENCE not in results:
        return None
    waits = _waits(results[REFERENCE])
    worst = max(waits, default=None)
    return {"target": REFERENCE, "max_wait_pct": worst,
            "valid": worst is not None and worst <= STARVED_WAIT_PCT}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}".replace(",", " ")


def _ratio(value: float | None, reference: float | None, *, lower_is_better: bool = False) -> str:
    if value is None or not reference:
        return ""
    ratio = value / reference
    return f" ({ratio:.2f}× node)" if not lower_is_better else f" ({ratio:.2f}× node's)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _latency_cell(step: dict[str, Any]) -> str:
    cell = (f"{_ms(step['p50_ms'])} / {_ms(step['p99_ms'])} ms, {step['delivered_pct']} % delivered, "
            f"{_ms(step['server_cpu_pct'])} % CPU")
    return cell + (" [generator saturated]" if step["generator_saturated"] else "")


def summary(results: dict[str, dict[str, Any]]) -> str:
    """The comparison table: one row per headline figure, one column per target."""
    targets = list(results)
    judged = judge_reference(results)
    # Ratios only against a reference that was not starved.
    node = results.get(REFERENCE, {}) if judged and judged["valid"] else {}
    rows: list[list[str]] = []
    capacity = {t: r["capacity"] for t, r in results.items() if "capacity" in r}
    if capacity:
        any_run = next(iter(capacity.values()))
        reference = node.get("capacity", {}).get("ceiling_per_s")
        rows.append([f"fan-out ceiling ({any_run['clients']} clients × {any_run['assets']} assets, deliveries/s, "
                     "≥ 99 % delivered and p99 ≤ 250 ms)"]
                    + [(_num(capacity[t]["ceiling_per_s"]) + ("" if t == "node" else _ratio(
                        capacity[t]["ceiling_per_s"], reference))
                        + (" [generator saturated]" if capacity[t]["generator_saturated"] else ""))
                       if t in capacity else "" for t in targets])
    latency = {t: r["latency"] for t, r in results.items() if "latency" in r}
    if latency:
        first = next(iter(latency.values()))
        for index, step in enumerate(first["steps"]):
            label = (f"{first['clients']} clients × {first['per_client']} of {first['assets']} assets × "
                     f"{step['tick_rate_per_asset']:g} ticks/s ({_num(step['offered_per_s'])} deliveries/s): "
                     "p50 / p99 publish→receive")
            rows.append([label] + [_latency_cell(latency[t]["steps"][index])
                                   if t in latency and len(latency[t]["steps"]) > index else "" for t in targets])
        if first["steps"]:
            costs = {t: latency[t]["steps"][0]["server_us_per_delivery"] if t in latency and latency[t]["steps"]
                     else None for t in targets}
            rows.append([f"server CPU per delivery at {_num(first['steps'][0]['offered_per_s'])}/s"]
                        + [("-" if costs[t] is None else f"{costs[t]:.1f} µs")
                           + ("" if t == "node" else _ratio(costs[t], costs.get("node") if node else None,
                                                            lower_is_better=True))
                           for t in targets])
    conns = {t: r["connections"] for t, r in results.items() if "connections" in r}
    if conns:
        def top(t: str) -> dict[str, Any] | None:
            levels = conns[t]["levels"] if t in conns else []
            return levels[-1] if levels else None

        tops = {t: top(t) for t in targets}
        node_top = top(REFERENCE) if node and REFERENCE in conns else None
        reference_rss = node_top["rss_per_connection_kb"] if node_top else None
        count = max((lv["connections"] for lv in tops.values() if lv), default=0)
        rows.append([f"RSS per idle subscribed connection at {_num(count)}"]
                    + [(f"{_ms(lv['rss_per_connection_kb'])} KB"
                        + ("" if t == "node" else _ratio(lv["rss_per_connection_kb"], reference_rss,
                                                         lower_is_better=True))) if lv else ""
                       for t, lv in tops.items()])
        rates = {t: _connect_rate(conns[t]["levels"]) if t in conns else None for t in targets}
        rows.append(["connects/s (connect + CONNECT + subscribe ack)"]
                    + [_num(rates[t]) + ("" if t == "node" else _ratio(rates[t], rates.get("node") if node else None))
                       for t in targets])
        costs = {t: _connect_cost(conns[t]["levels"]) if t in conns else None for t in targets}
        rows.append(["server CPU per connect"]
                    + [("-" if costs[t] is None else f"{costs[t]:.0f} µs")
                       + ("" if t == "node" else _ratio(costs[t], costs.get("node") if node else None,
                                                        lower_is_better=True))
                       for t in targets])
        storms = {t: conns[t].get("storm") if t in conns else None for t in targets}
        first_storm = next((s for s in storms.values() if s), None)
        if first_storm:
            rows.append([f"reconnect storm of {_num(first_storm['clients'])}: s to 99 % / 100 % subscribed, "
                         "peak RSS"]
                        + [(f"{_ms(s['seconds_to_99_pct'])} / {_ms(s['seconds_to_100_pct'])} s, "
                            f"{_ms(s['server_peak_rss_mb'])} MB{_storm_cost(s)}") if s else ""
                           for s in storms.values()])
        recovering = {t: conns[t].get("recovering_storm") if t in conns else None for t in targets}
        if any(r and "clients" in r for r in recovering.values()):
            rows.append([f"recovering storm of {_num(first_storm['clients']) if first_storm else '-'} (pid sent): "
                         "s to 99 % / 100 % back, recovered"]
                        + [(f"{_ms(r['seconds_to_99_pct'])} / {_ms(r['seconds_to_100_pct'])} s, "
                            f"{_num(r['recovered'])} recovered{_storm_cost(r)}") if r and "clients" in r
                           else ("-" if r else "") for r in recovering.values()])
    recovery = {t: r["recovery"] for t, r in results.items() if "recovery" in r and "fresh" in r["recovery"]}
    if recovery:
        rows.append(["connects/s fresh / recovering (pid, replay of one event)"]
                    + [f"{_num(recovery[t]['fresh']['connects_per_s'])} / "
                       f"{_num(recovery[t]['recovering']['connects_per_s'])}" if t in recovery else ""
                       for t in targets])
        rows.append(["Redis bytes per session / per stored event (log + busy room)"]
                    + [f"{recovery[t]['redis_bytes_per_session']} / "
                       f"{recovery[t]['redis_bytes_per_event_log']} + {recovery[t]['redis_bytes_per_event_busy_room']}"
                       if t in recovery else "" for t in targets])
    if not rows:
        return ""  # e.g. only the assets scenario ran: its own table says it all
    header = [f"{t} (starved: invalid)" if t == REFERENCE and judged and not judged["valid"] else t
              for t in targets]
    return _table(["one core for the server, same load", *header], rows)


def _storm_cost(storm: dict[str, Any]) -> str:
    us = storm.get("server_us_per_client")
    return "" if us is None else f", {us:.0f} µs CPU per client"


def _connect_cost(levels: list[dict[str, Any]]) -> float | None:
    """Server CPU µs per connect over every level (older reports have no such figure)."""
    spent = [(lv["connect"].get("server_us_per_connect"), lv["connect"]["connected"]) for lv in levels]
    if not spent or any(us is None for us, _ in spent):
        return None
    count = sum(n for _, n in spent)
    return sum(us * n for us, n in spent) / count if count else None


def _connect_rate(levels: list[dict[str, Any]]) -> float | None:
    connected = sum(lv["connect"]["connected"] for lv in levels)
    seconds = sum(lv["connect"]["seconds"] for lv in levels)
    return connected / seconds if seconds else None


def details(results: dict[str, dict[str, Any]]) -> str:
    """Every step of every scenario, for the curious and for finding the knee."""
    parts = []
    for target, scenarios in results.items():
        for name, result in scenarios.items():
            if name == "assets":
                parts.append(_spread(target, result))
                continue
            if name == "rates":
                parts.append(_rates(target, result))
                continue
            if name == "overload":
                parts.append(_overload(target, result))
                continue
            if name == "books":
                parts.append(_books(target, result))
                continue
            if name in ("recovery", "state"):
                parts.append(f"{target} · {name}\n" + _table(["figure", "value"], [
                    [key, str(value)] for key, value in result.items()]))
                continue
            if name == "connections":
                rows = [[_num(lv["connections"]), _num(lv["connect"]["connects_per_s"]),
                         str(lv["connect"]["errors"] or "-"), _ms(lv["server_rss_mb"]),
                         _ms(lv["rss_per_connection_kb"])] for lv in result["levels"]]
                parts.append(f"{target} · connections (baseline RSS {_ms(result['baseline_rss_mb'])} MB)\n"
                             + _table(["connections", "connects/s", "errors", "server RSS MB", "KB/connection"],
                                      rows))
                continue
            rows = [[_num(s["offered_per_s"]), _num(s["deliveries_per_s"]), str(s["delivered_pct"]),
                     _ms(s["p50_ms"]), _ms(s["p99_ms"]), _ms(s["max_ms"]), _ms(s["server_cpu_pct"]),
                     _ms(s["server_wait_pct"]), _ms(s["server_us_per_delivery"]),
                     _ms(s["generator_cpu_pct"]) + (" saturated" if s["generator_saturated"] else "")]
                    for s in result["steps"]]
            connect = result["connect"]
            parts.append(f"{target} · {name} ({connect['connected']}/{connect['requested']} clients connected"
                         f"{', errors ' + str(connect['errors']) if connect['errors'] else ''})\n"
                         + _table(["offered/s", "delivered/s", "delivered %", "p50 ms", "p99 ms", "max ms",
                                   "server CPU %", "server waited for CPU %", "server µs/delivery",
                                   "generator CPU %"], rows))
    return "\n\n".join(parts)


def _spread(target: str, result: dict[str, Any]) -> str:
    """The `assets` scenario: per pod, what it received from Redis and its CPU, for each channel layout.

    `cluster` is per-asset channels on a three-master Redis Cluster (its Redis CPU: all six nodes).
    """
    rows = []
    for layout in ("single", "per-asset", "cluster"):
        if layout not in result:
            continue
        run = result[layout]
        for pod in run["pods"]:
            rows.append([layout, str(pod["pod"]), _num(pod["watched_assets"]), _num(pod["received_per_s"]),
                         f"{_ms(pod['cpu_pct'])} (idle {_ms(pod['idle_cpu_pct'])})", _ms(pod["cpu_us_per_received"])])
        rows.append([layout, "all", "", _num(run["published_per_s"]) + " published", _ms(run["pods_cpu_pct"]),
                     f"Redis CPU {_ms(run['redis_cpu_pct'])} %"])
    return (f"{target} · assets ({result['assets']} assets over {result['pods']} pods, "
            f"{_num(result['ticks_per_s'])} ticks/s for {result['seconds']:g} s)\n"
            + _table(["channels", "pod", "assets watched", "received from Redis/s", "CPU %",
                      "CPU µs/received (above idle)"],
                     rows))


def _rates(target: str, result: dict[str, Any]) -> str:
    """The `rates` scenario: every client unthrottled against half of them at maxRate."""
    rows = []
    for name in ("unthrottled", "half_throttled"):
        s = result[name]
        rows.append([name, _num(s["deliveries_per_s"]), _ms(s["server_cpu_pct"]), _ms(s["server_wait_pct"]),
                     _ms(s.get("server_cpu_s_with_drain")), _num(round(s["bytes_out_per_s"] / 1024)),
                     _ms(s.get("unthrottled_updates_per_s_per_asset")),
                     _ms(s.get("throttled_updates_per_s_per_asset")), _ms(s["p99_ms"])])
    return (f"{target} · rates ({result['clients']} clients × {result['per_client']} of {result['assets']} assets, "
            f"{result['tick_rate_per_asset']:g} ticks/s per asset, half at maxRate {result['max_rate']:g}: "
            f"CPU × {result.get('cpu_ratio')}, bytes × {result.get('bytes_ratio')})\n"
            + _table(["clients", "delivered/s", "server CPU %", "server waited %", "server CPU s (with drain)",
                      "KiB out/s", "updates/s/asset unthrottled", "throttled", "p99 ms"], rows))


def _overload(target: str, result: dict[str, Any]) -> str:
    """The `overload` scenario: the ladder with overload mode on and off."""
    rows = []
    for mode in ("on", "off"):
        run = result.get(mode)
        for s in run["steps"] if run else []:
            rows.append([mode, _num(s["offered_per_s"]), _num(s["deliveries_per_s"]), _ms(s["p99_ms"]),
                         str(s["rate_cv"]), str(s["disconnects"]),
                         f"{s['private_received']}/{s['private_sent']}", _ms(s["private_p99_ms"]),
                         _ms(s["private_max_ms"]), _ms(s["server_cpu_pct"]), _ms(s["server_wait_pct"])])
    episodes = {mode: result[mode]["overload_episodes"] for mode in ("on", "off") if mode in result}
    ceiling = f"; ceiling {_num(result['ceiling_per_s'])}/s with overload off" if "ceiling_per_s" in result else ""
    return (f"{target} · overload ({result['clients']} clients × {result['assets']} assets; episodes {episodes}"
            f"{ceiling})\n"
            + _table(["overload mode", "offered/s", "delivered/s", "p99 tick age ms", "rate CV", "disconnects",
                      "private received/sent", "private p99 ms", "private max ms", "server CPU %",
                      "server waited %"], rows))


def _books(target: str, result: dict[str, Any]) -> str:
    """The `books` scenario: the same clients with 2 books each, then with the same 2 assets' quotes."""
    rows = []
    for kind, label in (("books", f"2 books (depth {' or '.join(map(str, result['depths']))}), "
                                  f"{_num(result['books']['changes_per_s_per_asset'])} level changes/s per asset"),
                        ("quotes", f"2 quotes, {result['quotes']['ticks_per_s_per_asset']:g} ticks/s per asset")):
        step = result[kind]
        rows.append([label, _num(step["deliveries_per_s"]), f"{_ms(step['p50_ms'])} / {_ms(step['p99_ms'])}",
                     _ms(step["server_cpu_pct"]), _ms(step["server_wait_pct"]), _ms(step["server_us_per_delivery"]),
                     _num(step["bytes_per_client_per_s"])])
    return (f"{target} · books ({result['connected']}/{result['clients']} clients, {result['assets']} assets, "
            f"{result['levels']} levels a side, {result['seconds']:g} s each)\n"
            + _table(["each client holds", "deliveries/s", "p50 / p99 age ms", "server CPU %",
                      "server waited for CPU %", "server µs/delivery", "bytes/client/s"], rows))


def contention(results: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for targets whose server waited for a CPU: the machine was busy with other work."""
    warnings = []
    for target, scenarios in results.items():
        waits = _waits(scenarios)
        if waits and max(waits) > STARVED_WAIT_PCT:
            warnings.append(f"{target}: other work took up to {max(waits):.0f} % of a window on the server's "
                            "core: its figures are pessimistic")
    judged = judge_reference(results)
    if judged is not None and not judged["valid"] and len(results) > 1:
        warnings.append(f"{REFERENCE} was starved of CPU (other work took up to {judged['max_wait_pct']} % of a "
                        "window on its core): "
                        "the comparison is invalid and no ratio is given; run it again on a quieter machine")
    return warnings


def render(document: dict[str, Any]) -> str:
    info = document["machine"]
    head = (f"realtime bench · {info['date']} · {info['nproc']} × {info['cpu_model']} · "
            f"load average {info['load_average_at_start']} at start · server CPUs {document['server_cpus']}, "
            f"generator CPUs {document['generator_cpus']}")
    limit = document.get("options", {}).get("server_cpu_limit")
    if limit is not None:
        head += f" · each server held to {limit:g} CPU (cgroup quota)"
    notes = "\n".join(f"note: {n}" for n in [*document["notes"], *contention(document["results"])])
    return "\n\n".join(p for p in (head, summary(document["results"]), details(document["results"]), notes) if p)
