"""Slowloris: HTTP request heads sent a byte at a time are cut at REALTIME_HEADER_TIMEOUT and counted (issue #18, 4);
idle keep-alive connections are closed at REALTIME_KEEPALIVE_TIMEOUT (issue #19).

Real processes only: `realtime serve`, raw TCP sockets that drip a websocket
handshake one byte per second, real socket.io clients beside them, and the
project's docker/nginx.conf in front (nginx cuts them with client_header_timeout).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from realtime.engine.heads import RESERVE
from tests.support import (
    GatewayFactory,
    InProcessFactory,
    Nginx,
    connected,
    eventually,
    sample,
    scrape,
    token,
)

pytestmark = pytest.mark.timing  # bounds on when a slow head is cut and how soon /health answers

BTC = "BTC_USDC_PERP"
HEAD = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
# On a loaded 2-core machine a timer may fire late; a connection cut later than this was not cut by the deadline.
MARGIN = 3.0


async def slow_head(port: int, seconds: float) -> tuple[float | None, bytes]:
    """Send HEAD one byte per second for `seconds`: (when the server answered or closed, what it answered)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()
    answer = b""
    cut: float | None = None
    try:
        for byte in range(int(seconds)):
            if cut is None:
                writer.write(HEAD[byte:byte + 1])
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            cut = loop.time() - start if cut is None else cut
            answer += chunk
            if not chunk:
                break
    except ConnectionError:
        cut = loop.time() - start if cut is None else cut
    finally:
        writer.close()
    return cut, answer


async def health_while(port: int, attack: asyncio.Future[object]) -> list[int]:
    """GET /health every 0.2 s until `attack` is done, each on a new connection: the statuses."""
    statuses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while not attack.done():
            async with http.get(f"http://127.0.0.1:{port}/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                statuses.append(response.status)
            await asyncio.sleep(0.2)
    return statuses


async def test_slow_request_heads_are_cut_at_the_deadline_and_the_pod_keeps_serving(
        start_gateway: InProcessFactory) -> None:
    timeout = 2.0
    gateway = await start_gateway(header_timeout=timeout)
    attack = asyncio.gather(*(slow_head(gateway.port, timeout + MARGIN + 4) for _ in range(200)))
    health = asyncio.create_task(health_while(gateway.port, attack))
    # While 200 heads drip in, a real client connects and is served.
    await asyncio.sleep(1)
    async with connected(gateway.url, auth={"token": token("alice")}) as alice:
        assert (await alice.call("price:subscribe", [BTC]))["ok"] is True
    results = await attack
    statuses = await health
    # Every slow head got a 408 and its connection closed, within the deadline and a margin.
    cuts = [cut for cut, _ in results]
    assert all(cut is not None and cut <= timeout + MARGIN for cut in cuts), sorted(cuts, key=lambda c: c or 1e9)[-5:]
    assert all(answer.startswith(b"HTTP/1.1 408 ") for _, answer in results), {a[:40] for _, a in results}
    assert statuses and set(statuses) == {200}
    assert sample(await scrape(gateway.url), "realtime_request_heads_timed_out_total") == 200


async def test_an_idle_keep_alive_connection_is_not_a_slow_head(start_gateway: InProcessFactory) -> None:
    # The deadline runs from a head's first byte; between requests a keep-alive connection may idle (nginx pools them).
    timeout = 1.0
    gateway = await start_gateway(header_timeout=timeout)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for _ in range(2):
            writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
            await reader.readexactly(length)
            await asyncio.sleep(timeout + 1)  # idle past the deadline: still open
        # A later head that is too slow is cut like a first one.
        writer.write(b"GET /hea")
        answer = await asyncio.wait_for(reader.read(), timeout + MARGIN)
        assert answer.startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
        start_gateway: InProcessFactory) -> None:
    # aiohttp alone would hold it an hour; REALTIME_KEEPALIVE_TIMEOUT closes it, while the clients of the socket
    # (websocket and long-polling alike) are never idle in that sense and stay.
    keepalive = 2.0
    gateway = await start_gateway(keepalive_timeout=keepalive)
    loop = asyncio.get_running_loop()
    async with connected(gateway.url, auth={"token": token("alice")}) as websocket, \
            connected(gateway.url, auth={"token": token("bob")}, transports=["polling"]) as polling:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
            length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
            await reader.readexactly(length)
            idle = loop.time()
            # Still open half way through, closed (EOF, nothing more sent) once the timeout has passed.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), keepalive / 2)
            assert await asyncio.wait_for(reader.read(), keepalive + MARGIN) == b""
            assert loop.time() - idle >= keepalive - 0.1
        finally:
            writer.close()
        # The socket.io clients were connected throughout, longer than the timeout, and are served.
        assert websocket.client.connected and polling.client.connected
        for client in (websocket, polling):
            ack = await client.client.call("price:subscribe", [BTC], timeout=5)
            assert ack["ok"] and ack["subscribed"] == [BTC]


async def test_connections_sending_a_head_count_toward_the_pod_cap(start_gateway: InProcessFactory) -> None:
    cap = RESERVE + 16
    gateway = await start_gateway(header_timeout=30, max_connections=cap, connect_rate=0)
    held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(cap)]
    for _, writer in held:
        writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n")
    handshake = f"{gateway.url}/socket.io/?EIO=4&transport=polling"
    try:
        # The pod holds its cap of connections (heads, no sessions): the next one is answered 503 at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async def refused() -> bool:
                try:
                    async with http.get(handshake) as response:
                        return response.status == 503 and response.headers.get("Retry-After") == "1"
                except aiohttp.ClientError:
                    return False
            await eventually(refused, timeout=10)
            # Heads that leave make room again.
            for _, writer in held[:20]:
                writer.close()

            async def admitted() -> bool:
                async with http.get(handshake) as response:
                    return response.status == 200
            await eventually(admitted, timeout=10)
            assert sample(await scrape(gateway.url), "realtime_request_heads_refused_total") >= 1
    finally:
        for _, writer in held:
            writer.close()


async def test_the_handshake_gate_counts_heads_and_a_full_pod_still_answers_probes(
        start_gateway: InProcessFactory) -> None:
    cap = RESERVE + 16
    gateway = await start_gateway(header_timeout=30, max_connections=cap, connect_rate=0, connect_timeout=60)
    handshake = f"{gateway.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        # Sessions up to the cap less a few; then slow heads fill it.
        for _ in range(cap - 4):
            async with http.get(handshake) as response:
                assert response.status == 200
        held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(4)]
        try:
            for _, writer in held:
                writer.write(b"GET / HTTP/1.1\r\n")

            async def heads() -> bool:
                return sample(await scrape(gateway.url), "realtime_request_heads") == 4
            await eventually(heads)
            # Sessions and heads fill the cap: a new session is refused at the handshake...
            async with http.get(handshake) as response:
                assert response.status == 503
            # ...and the reserve lets the probes in.
            async with http.get(gateway.url + "/health") as response:
                assert response.status == 200
        finally:
            for _, writer in held:
                writer.close()

        async def admitted() -> bool:
            async with http.get(handshake) as response:
                return response.status == 200
        await eventually(admitted, timeout=10)


@pytest.mark.slow
async def test_nginx_cuts_slow_request_heads(start_process: GatewayFactory, tmp_path: Path) -> None:
    # docker/nginx.conf sets client_header_timeout 5s (nginx's default: 60 s); the pod behind it never sees them.
    gateway = start_process()
    nginx = Nginx([gateway.port], tmp_path / "nginx")
    nginx.start()
    try:
        attack = asyncio.gather(*(slow_head(nginx.port, 5 + MARGIN + 3) for _ in range(50)))
        health = asyncio.create_task(health_while(gateway.port, attack))
        await asyncio.sleep(1)
        async with connected(nginx.url, auth={"token": token("alice")}) as alice:
            assert (await alice.call("price:subscribe", [BTC]))["ok"] is True
        results = await attack
        assert all(cut is not None and cut <= 5 + MARGIN for cut, _ in results), sorted(c or 1e9 for c, _ in results)
        assert set(await health) == {200}
    finally:
        nginx.stop()
