"""Real servers for the tests: redis-server and nginx, each on a free port on 127.0.0.1.

Nothing here is a fake: each class starts the real program and stops it when
the test is done. `realtime serve` itself is in `tests.support.gateway`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def raised_priority() -> Iterator[None]:
    """Run this thread, and every process or thread it starts meanwhile (they inherit it), at nice -10.

    For what a test times: the suite's parallel workers then cannot starve it. Root only (CI runs as
    root); elsewhere nothing changes.
    """
    before = os.getpriority(os.PRIO_PROCESS, 0)  # on Linux, this thread's
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except PermissionError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on `port`; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        # The poll interval between two connection attempts, not a wait for something.
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class RedisServer:
    """A real redis-server on a free port, which tests may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: run scripts/setup --test")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="realtime-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class Nginx:
    """Debian's nginx with the project's docker/nginx.conf, in front of `backends` (ports).

    The config is used as shipped; only the pod list (upstreams.conf) and the
    listen port are substituted.
    """

    CONFIG = ROOT / "docker" / "nginx.conf"

    def __init__(self, backends: list[int], directory: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed: run scripts/setup --test")
        self.binary = binary
        self.backends = backends
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self) -> Path:
        text = self.CONFIG.read_text()
        assert text.count("listen 8080;") == 1, "docker/nginx.conf must listen on 8080 exactly once"
        (self.dir / "nginx.conf").write_text(text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};"))
        (self.dir / "upstreams.conf").write_text("".join(f"server 127.0.0.1:{port};\n" for port in self.backends))
        return self.dir / "nginx.conf"

    def start(self) -> None:
        config = self.render()
        log = (self.dir / "stderr.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(config),
             "-g", f"daemon off; pid {self.dir / 'nginx.pid'}; error_log {self.dir / 'error.log'} warn;"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_port(self.port, 10, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.dir / "error.log", self.dir / "stderr.log")
                       if p.exists())
