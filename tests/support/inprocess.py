"""The gateway in the test's own process and event loop: the real `Server` on a real port, real clients.

The cheap route for every test that is not about processes (signals, exit codes,
memory of a process, the console script): no interpreter to start, no imports to
redo. Modelled on uvicorn's `tests/utils.py` `run_server`. Settings are read from
REALTIME_* variables exactly as `realtime serve` reads them (`gateway_env`), and the
log lines it writes are kept apart per gateway, in the format `realtime serve` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from realtime import logs
from realtime.config import Settings, check_serving, load_settings
from realtime.server import Server
from tests.support.gateway import gateway_env
from tests.support.processes import ROOT, RedisServer, free_port
from tests.support.waiting import eventually

# Which in-process gateway the running code belongs to: set before its tasks and listener start,
# so everything it spawns inherits it, while the test's own clients log without it.
_serving: ContextVar[int | None] = ContextVar("tests_serving", default=None)
_numbers = itertools.count(1)
logger = logging.getLogger(__name__)
OVERRUNS = ROOT / "test-artifacts" / "stop-overruns.txt"


def settings_from(env: dict[str, str]) -> Settings:
    """The settings `realtime serve` would build from `env` (and refuse as it would)."""
    with mock.patch.dict(os.environ, env, clear=True):
        settings = load_settings()
    check_serving(settings)
    return settings


class _Only(logging.Filter):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        return _serving.get() == self.number


@contextlib.contextmanager
def _captured(settings: Settings, stream: io.StringIO, number: int) -> Iterator[None]:
    """Gateway `number`'s log lines into `stream`, as `logs.configure` would write them to stderr."""
    handler = logs.handler(settings, stream)
    handler.addFilter(_Only(number))
    level = logging.getLevelName(settings.log_level.upper())
    handler.setLevel(level)
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in logs.NOISY}
    root.setLevel(min(root.getEffectiveLevel(), level))
    for name in logs.NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, noisy in saved[1].items():
            logging.getLogger(name).setLevel(noisy)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its chain of coroutines, innermost last."""
    steps, coro = [], task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        steps.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return f"{task.get_name()}: " + " -> ".join(steps)


async def _stopped(server: Server) -> None:
    """`server.stop()`, bounded as the process fixture bounds `realtime serve` (SIGTERM, then SIGKILL).

    A stop that outlasts its drain and Redis timeouts is a gateway bug a process would hide behind the
    kill: here the tasks still waiting are cancelled (the kill) and written to the test's log and to
    test-artifacts/stop-overruns.txt, so the overrun is seen rather than hanging the run.
    """
    bound = server.settings.shutdown_grace + 2 * server.settings.redis_timeout + 10
    stopping = asyncio.create_task(server.stop(), name="server.stop")
    done, _ = await asyncio.wait({stopping}, timeout=bound)
    if done:
        stopping.result()
        return
    left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    waiting = "\n".join(_awaiting(task) for task in left)
    logger.error("Server.stop() did not end within %.0fs; cancelling what still waits:\n%s", bound, waiting)
    OVERRUNS.parent.mkdir(exist_ok=True)
    with OVERRUNS.open("a") as out:
        out.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?')}: stop overran {bound:.0f}s\n{waiting}\n\n")
    for task in left:
        task.cancel()
    await asyncio.wait(left, timeout=5)


@contextlib.asynccontextmanager
async def run_server(settings: Settings, log: io.StringIO | None = None) -> AsyncIterator[Server]:
    """Start `Server(settings)` in this loop, yield it listening, stop it (its own drain) at the end.

    Its log lines go to `log` when given.
    """
    number = next(_numbers)
    with _captured(settings, log, number) if log is not None else contextlib.nullcontext():
        token = _serving.set(number)
        try:
            server = Server(settings)
            await server.start()
        finally:
            _serving.reset(token)
        try:
            yield server
        finally:
            token = _serving.set(number)
            try:
                await _stopped(server)
            finally:
                _serving.reset(token)


@dataclass
class InProcessGateway:
    """A gateway run by `run_server`, with what tests read of a `realtime serve` process."""

    server: Server
    env: dict[str, str]
    log: io.StringIO
    process: None = field(default=None, init=False)  # there is none: tests about processes use `Gateway`

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """What `/ready` answers, read where it is kept."""
        return self.server.health.ready

    async def wait_ready(self, timeout: float = 20) -> None:
        await eventually(self.ready, timeout)

    def logs(self) -> str:
        return self.log.getvalue()


# What the `start_gateway` fixture gives a test: `await start(**settings)` -> a started InProcessGateway.
InProcessFactory = Callable[..., Awaitable[InProcessGateway]]


def unique_instance() -> str:
    """`realtime serve`'s default instance id is host-pid: in one process, each gateway needs its own."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_numbers)}"


async def served_on_redis(start: InProcessFactory, redis_server: RedisServer, **settings: Any) -> InProcessGateway:
    """An in-process gateway on `redis_server` with channels of its own, so tests never hear each other."""
    suffix = str(free_port())
    return await start(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                       manager_channel=f"socketio-{suffix}", **settings)


# Before pytest-timeout's 120 s: where every task of a test that runs that long waits (pytest-timeout
# shows only threads, and the loop's thread is always in select()).
WATCHDOG = 100.0


def _dump_tasks() -> None:
    waiting = "\n".join(_awaiting(task) for task in asyncio.all_tasks())
    logger.error("the test still runs after %.0fs; its tasks wait here:\n%s", WATCHDOG, waiting)


@contextlib.asynccontextmanager
async def gateways(**defaults: Any) -> AsyncIterator[InProcessFactory]:
    """Start in-process gateways with REALTIME_* settings given as keywords (over `defaults`); all stop
    when the block ends."""
    watchdog = asyncio.get_running_loop().call_later(WATCHDOG, _dump_tasks)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(watchdog.cancel)
        async def start(**settings: Any) -> InProcessGateway:
            settings = {"instance_id": unique_instance(), **defaults, **settings}
            env = gateway_env(0, **settings)
            log = io.StringIO()
            server = await stack.enter_async_context(run_server(settings_from(env), log))
            env["REALTIME_PORT"] = str(server.port)
            gateway = InProcessGateway(server, env, log)
            await gateway.wait_ready()  # as `launch` waits for a process's /ready
            return gateway

        yield start
