"""Fixtures: real redis-server, `realtime serve` and nginx processes, stopped when the test ends.

The types they give (GatewayFactory, Cluster, ClusterFactory) live in tests.support.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Cluster,
    ClusterFactory,
    Gateway,
    GatewayFactory,
    Nginx,
    RedisServer,
    free_port,
    launch,
    redis_gateway,
)


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


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start `realtime serve` processes with REALTIME_* settings given as keywords."""
    started: list[Gateway] = []

    def start(*args: str, **settings: Any) -> Gateway:
        gateway = launch(tmp_path, *args, **settings)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(start_gateway: GatewayFactory, redis_server: RedisServer) -> Gateway:
    """A gateway on the session's Redis, with its own channels so tests never hear each other."""
    return redis_gateway(start_gateway, redis_server)


@pytest.fixture
def start_cluster(start_gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path
                  ) -> Iterator[ClusterFactory]:
    """Start `pods` gateways on one Redis with their own channels, then nginx in front of them."""
    started: list[Nginx] = []

    def start(pods: int = 3, redis: RedisServer | None = None, **settings: Any) -> Cluster:
        redis = redis or redis_server
        suffix = str(free_port())
        gateways = [start_gateway(redis_url=redis.url, price_channel=f"prices-{suffix}",
                                  manager_channel=f"socketio-{suffix}", instance_id=f"pod{i}-{suffix}", **settings)
                    for i in range(pods)]
        nginx = Nginx([g.port for g in gateways], tmp_path / f"nginx-{suffix}")
        nginx.start()
        started.append(nginx)
        return Cluster(gateways, nginx, redis)

    yield start
    for nginx in started:
        nginx.stop()
