"""CPU, run-queue wait and memory of a process, sampled over a measurement window.

The run-queue wait says how long the process's threads were ready to run
but had no CPU. It counts a thread waiting behind another thread of the
same process: Node's garbage-collector threads, pinned to the server's one
core with its event loop, make Node "wait" on an idle machine. What tells a
slow server from a starved one is the other processes' CPU on the server's
cores (`others_pct`): the cores' busy time, less the server's own CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Usage:
    """What a process used during a window: CPU and run-queue wait in % of the window, RSS at the end."""

    cpu_pct: float
    wait_pct: float | None
    rss_bytes: int
    cpu_s: float = 0.0  # CPU seconds in the window
    others_pct: float | None = None  # other processes' CPU on the cores this process may run on


def run_queue_wait(pid: int) -> float | None:
    """Seconds all threads of `pid` spent runnable but waiting for a CPU (Linux schedstat), if known."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that just ended
    except OSError:
        return None
    return total / 1e9


def busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds the cores `cpus` have spent busy since boot (/proc/stat), if known."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                values = [int(v) for v in fields]
                total += sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (guest is in user)
    except (OSError, ValueError, IndexError):
        return None
    return total / ticks


class CpuWindow:
    """CPU time of one process (all its threads) between `start()` and `stop()` (which may be called again
    later: each call measures from the same start)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self._cpu = 0.0
        self._wait: float | None = None
        self._cpus: set[int] = set()
        self._busy: float | None = None
        self._wall = 0.0

    def _cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._cpus = set(self.process.cpu_affinity() or [])
        self._cpu = self._cpu_seconds()
        self._wait = run_queue_wait(self.process.pid)
        self._busy = busy_seconds(self._cpus)
        self._wall = time.monotonic()

    def stop(self) -> Usage:
        cpu = self._cpu_seconds() - self._cpu
        wall = max(1e-9, time.monotonic() - self._wall)
        wait = run_queue_wait(self.process.pid)
        waited = None if wait is None or self._wait is None else 100.0 * (wait - self._wait) / wall
        busy = busy_seconds(self._cpus)
        others = None if busy is None or self._busy is None else max(0.0, 100.0 * (busy - self._busy - cpu) / wall)
        return Usage(cpu_pct=100.0 * cpu / wall, wait_pct=waited, rss_bytes=self.rss(), cpu_s=cpu,
                     others_pct=others)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)
