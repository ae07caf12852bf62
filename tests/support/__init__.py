"""Real parts for the tests, one module per concept; import the names from here.

- `processes`: redis-server and nginx on free ports, `free_port`, `rss_bytes`
- `gateway`: `realtime serve` as a process (`Gateway`, `launch`, `gateway_env`)
- `inprocess`: the gateway in the test's own loop (`run_server`, `InProcessGateway`, `gateways`)
- `cluster`: pods behind nginx (`Cluster`)
- `tokens`: JWTs signed with the test secret
- `clients`: python-socketio clients that record what they receive
- `wire`: a raw Engine.IO websocket client that sees frames in wire order
- `node`: node socket.io-client scripts (tests/js)
- `feed`: ticks on the price channel, back ends' private emits
- `web`: JSON endpoints and `/metrics`
- `waiting`: `eventually`, a wait on a condition
- `recovery`: node sessions for the recovery tests (imported from its module)
- `redis_cluster`: a real Redis Cluster, three masters with a replica each (fixtures)
"""

from __future__ import annotations

from tests.support.clients import Recorder, connect_error, connected
from tests.support.cluster import Cluster, ClusterFactory
from tests.support.feed import BTC, ETH, backend, backend_emit, emitter, feed, publish, publish_ticks, seqs, ticking
from tests.support.gateway import ASSETS, Gateway, GatewayFactory, gateway_env, launch, redis_gateway
from tests.support.inprocess import (
    InProcessFactory,
    InProcessGateway,
    gateways,
    run_server,
    served_on_redis,
    settings_from,
)
from tests.support.node import JS_DIR, NodeClients, NodeSession, node_clients, node_session, of, run_node
from tests.support.processes import ROOT, Nginx, RedisServer, free_port, raised_priority, rss_bytes, wait_port
from tests.support.tokens import SECRET, token
from tests.support.waiting import eventually
from tests.support.web import Samples, http_json, sample, scrape
from tests.support.wire import Packet, RawClient, tcp_send_buffer_max

__all__ = [
    "ASSETS",
    "BTC",
    "ETH",
    "JS_DIR",
    "ROOT",
    "SECRET",
    "Cluster",
    "ClusterFactory",
    "Gateway",
    "GatewayFactory",
    "InProcessFactory",
    "InProcessGateway",
    "Nginx",
    "NodeClients",
    "NodeSession",
    "Packet",
    "RawClient",
    "Recorder",
    "RedisServer",
    "Samples",
    "backend",
    "backend_emit",
    "connect_error",
    "connected",
    "emitter",
    "eventually",
    "feed",
    "free_port",
    "gateway_env",
    "gateways",
    "http_json",
    "launch",
    "node_clients",
    "node_session",
    "of",
    "publish",
    "publish_ticks",
    "raised_priority",
    "redis_gateway",
    "rss_bytes",
    "run_node",
    "run_server",
    "sample",
    "scrape",
    "seqs",
    "served_on_redis",
    "settings_from",
    "tcp_send_buffer_max",
    "ticking",
    "token",
    "wait_port",
]
