from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Gateway, RedisServer, free_port, gateway_env

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
        port = free_port()
        gateway = Gateway(port=port, env=gateway_env(port, **settings),
                          log_path=tmp_path / f"gateway-{port}.log", extra_args=list(args))
        gateway.start()
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
