"""Rolling restart: SIGTERM to one pod behind nginx moves its clients to the others (SPEC §7)."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter

import pytest

from realtime.waits import cancel
from tests.support import BTC, ClusterFactory, Gateway, eventually, http_json, node_clients, of, publish, token

pytestmark = pytest.mark.slow  # pods behind nginx


async def test_sigterm_moves_clients_to_other_pods_with_subscriptions(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(3, shutdown_grace=5)
    clients = ([{"token": token(f"ws{i}"), "transports": ["websocket"]} for i in range(9)]
               + [{"token": token(f"poll{i}"), "transports": ["polling"]} for i in range(6)])

    async def ticking() -> None:
        seq = 0
        while True:
            seq += 1
            await publish(cluster.redis.url, cluster.env["REALTIME_PRICE_CHANNEL"],
                          {"asset": BTC, "bid": seq, "ask": seq + 1, "seq": seq})
            await asyncio.sleep(0.1)  # pacing the ticker, not a wait for something

    ticker = asyncio.create_task(ticking())
    try:
        async with node_clients(cluster.url, clients, [BTC]) as node:
            await node.wait_until(lambda lines: len(of(lines, "ack")) == len(clients))
            placement = {ack["id"]: ack["instance"] for ack in of(node.lines, "ack")}
            victim, _ = Counter(placement.values()).most_common(1)[0]
            moved = {i for i, instance in placement.items() if instance == victim}
            pod = cluster.pod(victim)
            assert pod.process is not None

            pod.signal(signal.SIGTERM)
            mark = len(node.lines)
            # Not ready at once (or already gone).
            await eventually(lambda: _not_ready(pod), timeout=5, interval=0.01)

            def back(lines: list[dict[str, object]]) -> bool:
                acks = {line["id"] for line in of(lines[mark:], "ack")}
                return moved <= acks

            await node.wait_until(back, timeout=30)
            # Each moved client: a transport-level close (so it reconnected by itself),
            # then a new pod, its subscription restored, and ticks again.
            after = node.lines[mark:]
            for i in moved:
                reasons = [line["reason"] for line in of(after, "disconnect") if line["id"] == i]
                assert reasons and reasons[0] == "transport close", (i, reasons)
                ack = next(line for line in of(after, "ack") if line["id"] == i)
                assert ack["instance"] != victim and ack["subscribed"] == [BTC]
            last_ack = max(line["t"] for line in of(after, "ack"))
            await node.wait_until(lambda lines: moved <= {
                line["id"] for line in of(lines, "update") if line["t"] > last_ack}, timeout=20)
            # Clients of other pods were not touched.
            assert {line["id"] for line in of(after, "disconnect")} == moved

            # The pod exited cleanly, within its grace.
            code = await asyncio.to_thread(pod.process.wait, 30)
            assert code == 0, pod.logs()[-2000:]
            stopped = re.search(r"stopped in ([\d.]+)s; closed (\d+) connections", pod.logs())
            assert stopped is not None and float(stopped.group(1)) <= 5, pod.logs()[-2000:]
            reconnect = [next(line["t"] for line in of(after, "ack") if line["id"] == i)
                         - next(line["t"] for line in of(after, "disconnect") if line["id"] == i) for i in moved]
            print(f"\nSIGTERM: {len(moved)} clients moved; pod stopped in {stopped.group(1)} s; "
                  f"disconnect -> resubscribed on another pod: max {max(reconnect)} ms, "
                  f"median {sorted(reconnect)[len(reconnect) // 2]} ms")
    finally:
        await cancel(ticker)


async def _not_ready(pod: Gateway) -> bool:
    try:
        status, _ = await http_json(pod.url + "/ready")
    except OSError:
        return True  # already gone
    return status == 503
