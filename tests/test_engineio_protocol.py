"""socket.io's protocol test suite, "Engine.IO protocol" section, against a real gateway.

Reproduces the 16 cases of `test-suite/test-suite.js` in
https://github.com/socketio/socket.io-protocol (commit 4f633dd, mocha, node
`ws` + `fetch`), the peer's definition of the wire. The suite is not published
on npm and CI reaches only PyPI, npm and Debian, so its cases are rewritten
here with aiohttp's client, one test per upstream `it(...)`, named after it.
It runs against the gateway configured as the suite expects: ping interval
300 ms, ping timeout 200 ms, maxPayload 1 000 000 (and no per-address
connection rate: the suite opens many sessions from one address).

Where upstream only starts a wait without awaiting it (the websocket
"invalid query" cases), we check what Node's engine.io does: the upgrade
request is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import Gateway, launch, raised_priority

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
# mocha's timeouts in the suite: 2 s by default, 5 s for "heartbeat".
DEFAULT_TIMEOUT = 2.0
HEARTBEAT_TIMEOUT = 5.0

# The heartbeat cases time the server to a few milliseconds (a session closes 500 ms after it opens,
# the client looks at 500 ms): the gateway and its clients run at a raised priority.
pytestmark = pytest.mark.timing


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with raised_priority():
        gateway = launch(Path(tmp_path_factory.mktemp("eio-protocol")), ping_interval=PING_INTERVAL,
                         ping_timeout=PING_TIMEOUT, max_message_bytes=MAX_PAYLOAD, connect_rate=0)
    yield gateway
    gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ws_url(server: Gateway) -> str:
    return server.url.replace("http", "ws", 1)


async def fetch(http: aiohttp.ClientSession, url: str, method: str = "GET", body: str | None = None
                ) -> tuple[int, str]:
    async with http.request(method, url, data=body) as response:
        return response.status, await response.text()


async def init_long_polling_session(http: aiohttp.ClientSession, server: Gateway) -> str:
    """upstream `initLongPollingSession()`."""
    _, content = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling")
    sid: str = json.loads(content[1:])["sid"]
    return sid


async def next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT) -> str:
    """upstream `waitFor(socket, "message")`: the next text message."""
    message = await ws.receive(timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: str = message.data
    return data


async def closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT) -> None:
    """upstream `waitFor(socket, "close")`: messages before the close are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return


def check_handshake(content: str, upgrades: list[str]) -> None:
    assert content.startswith("0"), content
    value = json.loads(content[1:])
    assert set(value) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}, value
    assert isinstance(value["sid"], str)
    assert value["upgrades"] == upgrades
    assert value["pingInterval"] == 300
    assert value["pingTimeout"] == 200
    assert value["maxPayload"] == MAX_PAYLOAD


async def refused_upgrade(http: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url)
    assert refused.value.status == 400


# describe("handshake") / describe("HTTP long-polling")

async def test_handshake_polling_should_successfully_open_a_session(server: Gateway,
                                                                    http: aiohttp.ClientSession) -> None:
    status, content = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling")
    assert status == 200
    check_handshake(content, ["websocket"])


async def test_handshake_polling_should_fail_with_an_invalid_eio_query_parameter(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    assert (await fetch(http, f"{server.url}/socket.io/?transport=polling"))[0] == 400
    assert (await fetch(http, f"{server.url}/socket.io/?EIO=abc&transport=polling"))[0] == 400


async def test_handshake_polling_should_fail_with_an_invalid_transport_query_parameter(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    assert (await fetch(http, f"{server.url}/socket.io/?EIO=4"))[0] == 400
    assert (await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=abc"))[0] == 400


async def test_handshake_polling_should_fail_with_an_invalid_request_method(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    assert (await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling", "POST"))[0] == 400
    assert (await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling", "PUT"))[0] == 400


# describe("handshake") / describe("WebSocket")

async def test_handshake_websocket_should_successfully_open_a_session(server: Gateway,
                                                                      http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket") as ws:
        check_handshake(await next_message(ws), [])


async def test_handshake_websocket_should_fail_with_an_invalid_eio_query_parameter(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    await refused_upgrade(http, f"{ws_url(server)}/socket.io/?transport=websocket")
    await refused_upgrade(http, f"{ws_url(server)}/socket.io/?EIO=abc&transport=websocket")


async def test_handshake_websocket_should_fail_with_an_invalid_transport_query_parameter(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    await refused_upgrade(http, f"{ws_url(server)}/socket.io/?EIO=4")
    await refused_upgrade(http, f"{ws_url(server)}/socket.io/?EIO=4&transport=abc")


# describe("heartbeat"), this.timeout(5000)

async def test_heartbeat_polling_should_send_ping_pong_packets(server: Gateway, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(HEARTBEAT_TIMEOUT):
        sid = await init_long_polling_session(http, server)
        for _ in range(3):
            status, content = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
            assert (status, content) == (200, "2")
            status, _ = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", "POST", "3")
            assert status == 200


async def test_heartbeat_polling_should_close_the_session_upon_ping_timeout(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(HEARTBEAT_TIMEOUT):
        sid = await init_long_polling_session(http, server)
        # Upstream's own wait: one ping interval and one ping timeout without a PONG.
        await asyncio.sleep(PING_INTERVAL + PING_TIMEOUT)
        status, _ = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
        assert status == 400


async def test_heartbeat_websocket_should_send_ping_pong_packets(server: Gateway,
                                                                 http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket") as ws:
        await next_message(ws)  # handshake
        for _ in range(3):
            assert await next_message(ws, HEARTBEAT_TIMEOUT) == "2"
            await ws.send_str("3")


async def test_heartbeat_websocket_should_close_the_session_upon_ping_timeout(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket") as ws:
        await closed(ws, HEARTBEAT_TIMEOUT)  # the handshake and the ping are never answered


# describe("close")

async def test_close_polling_should_forcefully_close_the_session(server: Gateway,
                                                                 http: aiohttp.ClientSession) -> None:
    sid = await init_long_polling_session(http, server)
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    (status, content), _ = await asyncio.gather(fetch(http, url), fetch(http, url, "POST", "1"))
    assert (status, content) == (200, "6")
    assert (await fetch(http, url))[0] == 400


async def test_close_websocket_should_forcefully_close_the_session(server: Gateway,
                                                                   http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket") as ws:
        await next_message(ws)  # handshake
        await ws.send_str("1")
        await closed(ws)


# describe("upgrade")

async def test_upgrade_should_successfully_upgrade_from_http_long_polling_to_websocket(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    sid = await init_long_polling_session(http, server)
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket&sid={sid}") as ws:
        await ws.send_str("2probe")
        assert await next_message(ws) == "3probe"
        await ws.send_str("5")


async def test_upgrade_should_ignore_http_requests_with_same_sid_after_upgrade(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    sid = await init_long_polling_session(http, server)
    async with http.ws_connect(f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket&sid={sid}") as ws:
        await ws.send_str("2probe")
        await ws.send_str("5")
        status, _ = await fetch(http, f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
        assert status == 400


async def test_upgrade_should_ignore_websocket_connection_with_same_sid_after_upgrade(
        server: Gateway, http: aiohttp.ClientSession) -> None:
    sid = await init_long_polling_session(http, server)
    url = f"{ws_url(server)}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    async with http.ws_connect(url) as ws:
        await ws.send_str("2probe")
        await ws.send_str("5")
        async with http.ws_connect(url) as second:  # accepted, then closed: not refused
            await closed(second)
