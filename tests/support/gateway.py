"""`realtime serve` as a real process on a free port, configured with REALTIME_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import ROOT, RedisServer, free_port, wait_port
from tests.support.tokens import SECRET

ASSETS = "BTC_USDC_PERP:4,ETH_USDC_PERP:4,SOL_USDC_PERP:2"


@dataclass
class Gateway:
    """A `realtime serve` process."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    # The program before `extra_args`; docker/Dockerfile's CMD runs the console script instead.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "realtime", "serve"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20, wait_ready: bool = True) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()
        wait_port(self.port, timeout, self.process)
        if wait_ready:
            self.wait_ready(timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway on {self.port} not ready after {timeout}s:\n{self.logs()[-3000:]}")
            # The poll interval between two requests to /ready, not a wait for something.
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# What the `start_gateway` fixture gives a test: `start(*args, **settings)` -> a started Gateway.
GatewayFactory = Callable[..., Gateway]


def gateway_env(port: int, **settings: Any) -> dict[str, str]:
    """Environment for a gateway: the test secret and catalog, plus `settings` as REALTIME_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    env.update({
        "REALTIME_HOST": "127.0.0.1",
        "REALTIME_PORT": str(port),
        "REALTIME_JWT_SECRET": SECRET,
        "REALTIME_ASSETS": ASSETS,
        "REALTIME_SIMULATED_RATE": "0",
        # Test prices jump by 100 % (bid 1, 2, 3, ...): the band's own tests turn it on.
        "REALTIME_PRICE_BAND": "0",
        # Tests count every tick: a pause of this shared machine's loop must not turn on overload mode's
        # conflation (as in the bench); the overload tests turn it on.
        "REALTIME_OVERLOAD_LAG": "0",
        "REALTIME_SHUTDOWN_GRACE": "3",
        "PYTHONUNBUFFERED": "1",
    })
    for key, value in settings.items():
        name = "REALTIME_" + key.upper()
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def launch(log_dir: Path, *args: str, **settings: Any) -> Gateway:
    """Start `realtime serve` on a free port with REALTIME_* `settings`; the caller stops it."""
    port = free_port()
    gateway = Gateway(port=port, env=gateway_env(port, **settings), log_path=log_dir / f"gateway-{port}.log",
                      extra_args=list(args))
    gateway.start()
    return gateway


def redis_gateway(start_gateway: GatewayFactory, redis_server: RedisServer, **settings: Any) -> Gateway:
    """A gateway on `redis_server` with channels of its own, so tests never hear each other."""
    suffix = str(free_port())
    return start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                         manager_channel=f"socketio-{suffix}", **settings)
