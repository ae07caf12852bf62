"""Fixtures: real redis-server, gateways (in-process, or `realtime serve` processes) and nginx, stopped
when the test ends.

`start_gateway` and `gateway` run the real server in the test's event loop on a free port
(`tests.support.inprocess`); tests about processes (signals, exit codes, a process's memory, the
console script, pods behind nginx) use `start_process`. The types they give (InProcessFactory,
GatewayFactory, Cluster, ClusterFactory) live in tests.support.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Cluster,
    ClusterFactory,
    Gateway,
    GatewayFactory,
    InProcessFactory,
    InProcessGateway,
    Nginx,
    RedisServer,
    free_port,
    gateways,
    launch,
    raised_priority,
    redis_gateway,
    served_on_redis,
)


@pytest.fixture(autouse=True)
def _timing_first(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked `timing` asserts how soon something happens: it (and every process or thread it starts)
    runs at a raised CPU priority, so the suite's parallel workers cannot starve what it times."""
    if request.node.get_closest_marker("timing") is None:
        yield
        return
    with raised_priority():
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that stop Redis use `own_redis`."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone may stop and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["lean", pytest.param("stock", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest) -> str:
    """The websocket engine (REALTIME_ENGINE) of the test's gateways: both in CI, lean in the inner loop.

    A test that names `engine` itself (parametrize, or a setting) decides alone.
    """
    return str(request.param)


@pytest.fixture
async def start_gateway(engine: str) -> AsyncIterator[InProcessFactory]:
    """Start gateways in this process and loop, with REALTIME_* settings given as keywords: `await start(...)`."""
    async with gateways(engine=engine) as start:
        yield start


@pytest.fixture
async def gateway(start_gateway: InProcessFactory, redis_server: RedisServer) -> InProcessGateway:
    """An in-process gateway on the session's Redis, with its own channels so tests never hear each other."""
    return await served_on_redis(start_gateway, redis_server)


@pytest.fixture
def start_process(tmp_path: Path, engine: str) -> Iterator[GatewayFactory]:
    """Start `realtime serve` processes with REALTIME_* settings given as keywords."""
    started: list[Gateway] = []

    def start(*args: str, **settings: Any) -> Gateway:
        gateway = launch(tmp_path, *args, **{"engine": engine, **settings})
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def process_gateway(start_process: GatewayFactory, redis_server: RedisServer) -> Gateway:
    """A `realtime serve` process on the session's Redis, with its own channels."""
    return redis_gateway(start_process, redis_server)


@pytest.fixture
def start_cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start `pods` gateways on one Redis with their own channels, then nginx in front of them.

    Pods run the default engine: these tests are about pods, and each costs processes and nginx.
    """
    started: list[Nginx | Gateway] = []

    def start(pods: int = 3, redis: RedisServer | None = None, **settings: Any) -> Cluster:
        redis = redis or redis_server
        suffix = str(free_port())
        for i in range(pods):
            started.append(launch(tmp_path, redis_url=redis.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", instance_id=f"pod{i}-{suffix}", **settings))
        gateways_ = [g for g in started[-pods:] if isinstance(g, Gateway)]
        nginx = Nginx([g.port for g in gateways_], tmp_path / f"nginx-{suffix}")
        nginx.start()
        started.append(nginx)
        return Cluster(gateways_, nginx, redis)

    yield start
    for part in reversed(started):
        part.stop()

