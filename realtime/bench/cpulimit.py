"""A CPU limit for a server under test, as Kubernetes sets one: a CFS quota in a cgroup of its own.

On a machine with two cores the load generator saturates its one core before
a pod on the other does (the pod's cost per delivery falls as its batches
grow), so overload cannot be studied there at full speed. A pod held to a
share of its core, as `resources.limits.cpu` holds it, is overloaded while
the generator still keeps up. Root only; cgroup v2 (`cpu.max`) or v1
(`cpu.cfs_quota_us`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the kernel's default period, as Kubernetes uses it


def limit_cpu(pid: int, cores: float) -> Path:
    """Move `pid` (and every thread it has or starts) into a new cgroup held to `cores` CPUs; its directory.

    Raises OSError where no cgroup CPU controller is writable.
    """
    quota = round(cores * PERIOD_US)
    unified = CGROUP / "cgroup.controllers"
    if unified.exists() and "cpu" in unified.read_text().split():
        group = CGROUP / f"realtime-bench-{pid}"
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    else:
        group = CGROUP / "cpu" / f"realtime-bench-{pid}"
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    (group / "cgroup.procs").write_text(str(pid))
    return group


def remove(group: Path) -> None:
    """Remove a limit's cgroup once its process has exited."""
    with contextlib.suppress(OSError):
        group.rmdir()
