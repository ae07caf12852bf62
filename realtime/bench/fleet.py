"""The load-generator workers as the bench sees them: start, command, sample, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.bench.latency import Histogram
from realtime.bench.sampling import CpuWindow, Usage


def pinned(cpus: Sequence[int]) -> Callable[[], None] | None:
    """A pre-exec hook that pins the child (and every thread it starts) to `cpus`."""
    if not cpus:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


@dataclass
class Connected:
    """The outcome of opening clients on every worker."""

    connected: int
    errors: dict[str, int]
    elapsed: float
    subscribers: Counter[str] = field(default_factory=Counter)


@dataclass
class Storm:
    """A reconnect storm: seconds from the loss to each client's subscribe ack (sorted), and failures."""

    times: list[float]
    errors: dict[str, int]
    recovered: int = 0  # clients the server answered with the pid they sent


@dataclass
class Counts:
    """Per client (in `subjects` order) price updates, bytes read by all, private event latencies (µs, sorted)."""

    counts: list[int]
    subjects: list[str]
    bytes: int
    private_us: list[int]


@dataclass
class Received:
    """What all workers received since the last `start`."""

    histogram: Histogram
    stray: int
    closed: int
    bytes: int = 0  # received on the clients' sockets


class Worker:
    """One `python -m realtime.bench.loadgen` process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.cpu = CpuWindow(process.pid)
        self._lock = asyncio.Lock()

    async def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self._lock:
            self.process.stdin.write(orjson.dumps(command) + b"\n")
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"load-generator worker {self.process.pid} exited ({self.process.returncode})")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise RuntimeError(f"load-generator worker: {reply['error']}")
        return reply


class Fleet:
    """Several workers, each on the generator's CPUs, driven together."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @classmethod
    async def start(cls, count: int, cpus: Sequence[int]) -> Fleet:
        workers = []
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "realtime.bench.loadgen",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                preexec_fn=pinned(cpus), limit=1 << 24,
            )
            workers.append(Worker(process))
        return cls(workers)

    async def stop(self) -> None:
        for worker in self.workers:
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()

    async def _all(self, command: dict[str, Any], timeout: float = 30) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.call(command, timeout) for w in self.workers)))

    async def connect(self, *, host: str, port: int, path: str, secret: str, first: int, count: int,
                      assets: list[str], per_client: int, concurrency: int, timeout: float = 30,
                      depths: list[int] | None = None, max_rate: float | None = None) -> Connected:
        """Open `count` more clients, spread over the workers; client numbers start at `first`.

        With `depths`, each subscribes to its assets' books (see `loadgen.Worker.connect`) instead of quotes;
        with `max_rate`, to quotes at that `maxRate`.
        """
        share, extra = divmod(count, len(self.workers))
        commands = []
        for index in range(len(self.workers)):
            n = share + (1 if index < extra else 0)
            commands.append({"cmd": "connect", "args": {
                "host": host, "port": port, "path": path, "secret": secret, "first": first, "count": n,
                "assets": assets, "per_client": per_client, "timeout": timeout, "depths": depths, "max_rate": max_rate,
                "concurrency": max(1, concurrency // len(self.workers))}})
            first += n
        replies = await asyncio.gather(*(w.call(c, timeout + 60 + count / 100)
                                         for w, c in zip(self.workers, commands, strict=True)))
        errors: Counter[str] = Counter()
        subscribers: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
            subscribers.update(reply["subscribers"])
        return Connected(connected=sum(r["connected"] for r in replies), errors=dict(errors),
                         elapsed=max(r["elapsed"] for r in replies), subscribers=subscribers)

    async def storm(self, *, host: str, port: int, concurrency: int, timeout: float = 60,
                    recover: bool = False) -> Storm:
        """Every open client loses its transport at once and reconnects; when each was subscribed again.

        With `recover`, each sends the pid (and offset) of its last connection, as socket.io-client does.
        """
        replies = await self._all({"cmd": "storm", "args": {
            "host": host, "port": port, "timeout": timeout, "recover": recover,
            "concurrency": max(1, concurrency // len(self.workers))}}, timeout=timeout + 120)
        errors: Counter[str] = Counter()
        times: list[float] = []
        for reply in replies:
            errors.update(reply["errors"])
            times.extend(reply["times"])
        return Storm(sorted(times), dict(errors), sum(reply["recovered"] for reply in replies))

    async def reset(self, since_us: int) -> None:
        """Count from now on only updates published at or after `since_us`."""
        await self._all({"cmd": "start", "since_us": since_us})

    async def received(self) -> Received:
        histogram = Histogram()
        stray = closed = received_bytes = 0
        for reply in await self._all({"cmd": "stats"}):
            histogram.merge(reply["hist"], reply["received"], reply["max_us"])
            stray += reply["stray"]
            closed += reply["closed"]
            received_bytes += reply["bytes"]
        return Received(histogram, stray, closed, received_bytes)

    async def counts(self) -> Counts:
        """Per client, price updates since the last reset; bytes read; private events' latencies."""
        counts: list[int] = []
        subjects: list[str] = []
        private: list[int] = []
        total = 0
        for reply in await self._all({"cmd": "counts"}):
            counts.extend(reply["counts"])
            subjects.extend(reply["subjects"])
            private.extend(reply["private_us"])
            total += reply["bytes"]
        return Counts(counts, subjects, total, sorted(private))

    async def close_clients(self) -> None:
        await self._all({"cmd": "close"}, timeout=60)

    def cpu_start(self) -> None:
        for worker in self.workers:
            worker.cpu.start()

    def cpu_stop(self) -> list[Usage]:
        return [worker.cpu.stop() for worker in self.workers]
