from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway, Nginx, RedisServer, free_port, launch

GatewayFactory = Callable[..., Gateway]


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
    suffix = str(free_port())
    return start_gateway(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                         manager_channel=f"socketio-{suffix}")


@dataclass
class Cluster:
    """Gateway pods sharing one Redis (and its channels), behind nginx."""

    pods: list[Gateway]
    nginx: Nginx
    redis: RedisServer

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def env(self) -> dict[str, str]:
        return self.pods[0].env

    def pod(self, instance: str) -> Gateway:
        return next(p for p in self.pods if p.env["REALTIME_INSTANCE_ID"] == instance)


ClusterFactory = Callable[..., Cluster]


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
