"""CPU and memory of a process, sampled over a measurement window."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Usage:
    """What a process used during a window: CPU in % of one core, RSS at the end."""

    cpu_pct: float
    rss_bytes: int


class CpuWindow:
    """CPU time of one process (all its threads) between `start()` and `stop()`."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self._cpu = 0.0
        self._wall = 0.0

    def _cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()

    def stop(self) -> Usage:
        cpu = self._cpu_seconds() - self._cpu
        wall = max(1e-9, time.monotonic() - self._wall)
        return Usage(cpu_pct=100.0 * cpu / wall, rss_bytes=self.rss())

    def rss(self) -> int:
        return int(self.process.memory_info().rss)
