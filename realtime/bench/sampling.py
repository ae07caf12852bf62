"""CPU, run-queue wait and memory of a process, sampled over a measurement window.

The run-queue wait says how long the process was ready to run but had no
CPU: on a machine shared with other work it tells a slow server from a
starved one.
"""

from __future__ import annotations

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


class CpuWindow:
    """CPU time of one process (all its threads) between `start()` and `stop()` (which may be called again
    later: each call measures from the same start)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self._cpu = 0.0
        self._wait: float | None = None
        self._wall = 0.0

    def _cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._cpu = self._cpu_seconds()
        self._wait = run_queue_wait(self.process.pid)
        self._wall = time.monotonic()

    def stop(self) -> Usage:
        cpu = self._cpu_seconds() - self._cpu
        wall = max(1e-9, time.monotonic() - self._wall)
        wait = run_queue_wait(self.process.pid)
        waited = None if wait is None or self._wait is None else 100.0 * (wait - self._wait) / wall
        return Usage(cpu_pct=100.0 * cpu / wall, wait_pct=waited, rss_bytes=self.rss(), cpu_s=cpu)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)
