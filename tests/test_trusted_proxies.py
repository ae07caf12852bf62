"""Per-address limits key on real clients behind nginx, and a client cannot name its own address.

Every client here is a real HTTP client on its own loopback address (127.0.0.2,
127.0.0.3, ...: Linux routes all of 127/8 to lo), talking to the project's nginx
(docker/nginx.conf) or to the gateway directly. nginx connects to the gateway
from 127.0.0.1, the only proxy the gateway trusts, as ingress-nginx's pods
would be in a cluster (docs/security.md; docs/scaling.md, Trusted proxies).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from tests.support import ClusterFactory, InProcessFactory, connected, token

BURST = 3
LIMITS = {"connect_rate": 0.01, "connect_burst": BURST}


@asynccontextmanager
async def client_at(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose connections come from `address`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)) as s:
        yield s


async def handshake(http: aiohttp.ClientSession, url: str, forwarded_for: str | None = None) -> int:
    """Open an Engine.IO session (what the per-address connect rate counts); the HTTP status."""
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    async with http.get(url + "/socket.io/?EIO=4&transport=polling", headers=headers) as response:
        return response.status


@pytest.mark.slow
async def test_clients_behind_nginx_get_their_own_connect_budgets(start_cluster: ClusterFactory) -> None:
    # nginx (127.0.0.1) is trusted, and so is an outer load balancer (127.0.0.4)
    # that forwards for clients it names, as a cloud LB in front of ingress-nginx.
    cluster = start_cluster(pods=1, trusted_proxies="127.0.0.1,127.0.0.4", **LIMITS)
    async with client_at("127.0.0.2") as first, client_at("127.0.0.3") as second:
        assert [await handshake(first, cluster.url) for _ in range(BURST + 1)] == [200] * BURST + [429]
        # Not keyed on nginx's address: another client still has its whole budget,
        # a real socket.io websocket client included.
        assert await handshake(second, cluster.url) == 200
        async with connected(cluster.url, auth={"token": token("bob")}, http_session=second) as bob:
            assert (await bob.call("price:subscribe", ["BTC_USDC_PERP"]))["ok"] is True
    # Behind the outer balancer: "client, balancer" reaches the gateway as
    # "client, 127.0.0.4, 127.0.0.1"; the right-most untrusted hop is the client.
    async with client_at("127.0.0.4") as balancer:
        assert [await handshake(balancer, cluster.url, "203.0.113.7") for _ in range(BURST + 1)] == \
            [200] * BURST + [429]
        assert await handshake(balancer, cluster.url, "198.51.100.9") == 200


@pytest.mark.slow
async def test_a_client_cannot_spoof_its_address_through_nginx(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(pods=1, trusted_proxies="127.0.0.1,127.0.0.4", **LIMITS)
    # A fresh made-up address each time, a trusted one, a list, garbage: nginx
    # appends the real peer, and that is the right-most untrusted hop.
    spoofed = ["1.2.3.4", "5.6.7.8", "127.0.0.4", "127.0.0.1", "9.9.9.9, 127.0.0.4", "not-an-address", "", "::1"]
    async with client_at("127.0.0.2") as liar:
        statuses = [await handshake(liar, cluster.url, value) for value in spoofed]
    assert statuses == [200] * BURST + [429] * (len(spoofed) - BURST)
    async with client_at("127.0.0.3") as honest:
        assert await handshake(honest, cluster.url) == 200


async def test_a_direct_client_is_keyed_on_its_peer_address(start_gateway: InProcessFactory) -> None:
    # Not through a trusted proxy: X-Forwarded-For is not read at all.
    gateway = await start_gateway(trusted_proxies="127.0.0.1", **LIMITS)
    spoofed = [f"198.51.100.{i}" for i in range(BURST + 2)]
    async with client_at("127.0.0.2") as direct:
        statuses = [await handshake(direct, gateway.url, value) for value in spoofed]
    assert statuses == [200] * BURST + [429] * 2
    async with client_at("127.0.0.3") as other:
        assert await handshake(other, gateway.url, spoofed[0]) == 200
