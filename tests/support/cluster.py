"""Several gateway pods on one Redis, behind nginx: what the `start_cluster` fixture gives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.support.gateway import Gateway
from tests.support.processes import Nginx, RedisServer


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


# What the `start_cluster` fixture gives a test: `start(pods=3, redis=None, **settings)` -> a Cluster.
ClusterFactory = Callable[..., Cluster]
