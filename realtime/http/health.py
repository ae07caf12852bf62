"""`GET /health` and `GET /ready` (SPEC §5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass
class HealthState:
    """What the probes report; the server keeps it current."""

    instance_id: str
    started: float
    redis_required: bool
    redis_up: Callable[[], bool]
    connections: Callable[[], int]
    price_channels: Callable[[], list[str]] = list  # the price channels listened to now
    draining: bool = False

    @property
    def ready(self) -> bool:
        return not self.draining and (not self.redis_required or self.redis_up())

    def redis_state(self) -> str:
        if not self.redis_required:
            return "none"
        return "up" if self.redis_up() else "down"


def routes(state: HealthState) -> list[web.RouteDef]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({
            "status": "draining" if state.draining else "ok",
            "instance": state.instance_id,
            "connections": state.connections(),
            "uptime": round(time.monotonic() - state.started, 3),
            "redis": state.redis_state(),
            "price_channels": state.price_channels(),
        })

    async def ready(request: web.Request) -> web.Response:
        body = {"ready": state.ready, "instance": state.instance_id, "draining": state.draining,
                "redis": state.redis_state()}
        return web.json_response(body, status=200 if state.ready else 503)

    return [web.get("/health", health), web.get("/ready", ready)]
