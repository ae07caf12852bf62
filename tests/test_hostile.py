"""Hostile input, property-based: every inbound path of one live gateway gets generated garbage.

Each property asserts a coded answer (ack, connect_error, HTTP status) or a
counted drop, never INTERNAL, and that the gateway then still serves a good
client. One gateway serves the whole module, with the rate limits off so that
refusals are about content, and a bounded number of examples per property.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest
import socketio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from realtime.catalog import Catalog, parse_assets
from realtime.feed.parsing import MAX_SAFE_INTEGER
from realtime.feed.prices import PriceBook, TickRejected
from tests.support import ASSETS, SECRET, Gateway, RedisServer, connected, free_port, launch, publish, token

BTC, ETH, SOL = "BTC_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC_PERP"
EVENTS = ["price:subscribe", "price:unsubscribe", "auth:refresh"]
RESERVED = ["connect", "disconnect", "*", "connect_error", "message"]
ACK_CODES = {"BAD_REQUEST", "UNKNOWN_ASSET", "FORBIDDEN", "TOO_MANY_SUBSCRIPTIONS", "AUTH_INVALID", "AUTH_EXPIRED"}
REFUSAL_CODES = {"AUTH_REQUIRED", "AUTH_INVALID", "AUTH_EXPIRED"}

EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hostile(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    suffix = str(free_port())
    gateway = launch(Path(tmp_path_factory.mktemp("hostile")), redis_url=redis_server.url,
                     price_channel=f"prices-{suffix}", manager_channel=f"socketio-{suffix}",
                     event_rate=0, connect_rate=0, max_message_bytes=16384)
    yield gateway
    gateway.stop()


async def still_serving(gateway: Gateway) -> None:
    assert gateway.process is not None and gateway.process.poll() is None, gateway.logs()[-2000:]
    async with connected(gateway.url, auth={"token": token("good")}) as client:
        assert (await client.call("price:subscribe", [BTC]))["ok"] is True


def check_ack(ack: Any) -> None:
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if not ack["ok"]:
        assert ack["error"]["code"] in ACK_CODES, ack
        assert isinstance(ack["error"]["message"], str)


# Event payloads: any name, any JSON, binary attachments too.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80)
    | st.sampled_from([BTC, "eth_usdc_perp", "user:bob", "asset:BTC_USDC_PERP", "token"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
arguments = st.lists(json_values | st.binary(max_size=64), max_size=3)
event_names = st.sampled_from(EVENTS + RESERVED) | st.text(max_size=30)


@EXAMPLES
@given(calls=st.lists(st.tuples(event_names, arguments), min_size=1, max_size=4))
async def test_any_event_gets_a_coded_ack(hostile: Gateway, calls: list[tuple[str, list[Any]]]) -> None:
    async with connected(hostile.url, auth={"token": token("mallory", assets=[BTC, ETH])}) as client:
        for event, args in calls:
            data = args[0] if len(args) == 1 else tuple(args)
            if any(isinstance(arg, bytes) for arg in args):
                # A binary packet: no ack, the transport is closed at once (tests/test_admission.py).
                await client.client.emit(event, data)
                await client.wait_for("disconnect", timeout=10)
                await still_serving(hostile)
                return
            ack = await (client.client.call(event, data, timeout=10) if args else client.client.call(event, timeout=10))
            check_ack(ack)
        # The same connection still works and kept its identity.
        assert (await client.call("price:subscribe", [BTC]))["ok"] is True
        assert (await client.call("auth:refresh", {"token": token("other")}))["error"]["code"] == "FORBIDDEN"


async def test_reserved_event_names_cannot_run_the_connect_or_disconnect_handlers(hostile: Gateway) -> None:
    async with connected(hostile.url, auth={"token": token("mallory", ttl=3600)}) as client:
        for event in ["disconnect", "connect", "*"]:
            ack = await client.client.call(event, {"HTTP_AUTHORIZATION": f"Bearer {token('admin')}"}, timeout=10)
            assert ack["error"]["code"] == "BAD_REQUEST"
        # Still registered: its events are answered as its own, not as "not registered".
        assert (await client.call("auth:refresh", {"token": token("admin")}))["error"]["code"] == "FORBIDDEN"


# Raw Engine.IO frames on a websocket that completed a real Socket.IO connect.

frames = (
    st.text(max_size=200)
    | st.builds(lambda t, body: f"{t}{body}", st.sampled_from(["0", "1", "2", "3", "4", "40", "41", "42", "43",
                                                               "44", "45", "46", "421", "4299999999999"]),
                st.text(max_size=100) | json_values.map(json.dumps))
    | st.builds(lambda n: f'45{n}-["price:subscribe",{{"_placeholder":true,"num":0}}]', st.integers(0, 10**9))
    | st.binary(max_size=200)
)


@EXAMPLES
@given(sequence=st.lists(frames, min_size=1, max_size=6))
async def test_any_engineio_frame_leaves_others_served(hostile: Gateway, sequence: list[str | bytes]) -> None:
    ws_url = hostile.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        assert (await ws.receive_str(timeout=10)).startswith("0")
        await ws.send_str("40" + json.dumps({"token": token("mallory")}))
        assert (await ws.receive_str(timeout=10)).startswith("40")
        for frame in sequence:
            try:
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            except ConnectionResetError:
                break  # the server may close a session that sends garbage: that is its right
    await still_serving(hostile)


async def test_binary_attachment_bomb_closes_the_transport(hostile: Gateway) -> None:
    ws_url = hostile.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.receive_str(timeout=10)
        await ws.send_str("40" + json.dumps({"token": token("mallory")}))
        await ws.receive_str(timeout=10)
        # Announce a billion attachments (the most the parser takes), then keep sending them.
        await ws.send_str('45999999999-["price:subscribe",{"_placeholder":true,"num":0}]')
        for _ in range(200):
            try:
                await ws.send_bytes(b"\x00" * 16000)
            except ConnectionResetError:
                break
        # The announcing packet closed the transport at once: Engine.IO's CLOSE, then the websocket
        # closes; the attachments that follow are not kept (tests/test_admission.py has the details).
        assert await ws.receive_str(timeout=10) == "1"
        assert (await ws.receive(timeout=10)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await still_serving(hostile)


# HTTP bodies: long-polling POSTs to a real session.

async def _polling_session(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base) as response:
        sid = json.loads((await response.text())[1:])["sid"]
    url = f"{base}&sid={sid}"
    async with http.post(url, data=("40" + json.dumps({"token": token("mallory")})).encode()) as response:
        assert response.status == 200
    return url


@EXAMPLES
@given(body=(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
             | st.lists(st.text(max_size=40), max_size=5).map(lambda parts: "\x1e".join(parts).encode())))
async def test_any_polling_body_gets_200_or_400(hostile: Gateway, body: bytes) -> None:
    async with aiohttp.ClientSession() as http:
        url = await _polling_session(http, hostile.url + "/socket.io/?EIO=4&transport=polling")
        async with http.post(url, data=body) as response:
            assert response.status in {200, 400}, (response.status, await response.text())
    await still_serving(hostile)


async def test_server_only_packets_over_polling_are_answered(hostile: Gateway) -> None:
    # python-engineio alone would leave these POSTs pending for good (see realtime/engine/inbound.py).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for body in [b"2", b"0", b"6", b"4x\x1e2probe", b"9"]:
            url = await _polling_session(http, hostile.url + "/socket.io/?EIO=4&transport=polling")
            async with http.post(url, data=body) as response:
                assert response.status == 200, body
    await still_serving(hostile)


# HTTP bodies: POST /api/v1/publish with a service token.

rooms = (st.sampled_from(["user:good", "role:risk", "asset:btc_usdc_perp", "asset:DOGE", "user:", "room", ""])
         | st.text(max_size=40) | json_values)
publications = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["order:update", "price:update", "auth:expiring", "session:closed", "connect", ""])
    | json_values,
    "room": rooms, "user": json_values, "data": json_values, "extra": json_values,
})
publish_bodies = publications.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=300) \
    | json_values.map(lambda v: json.dumps(v).encode())


@EXAMPLES
@given(body=publish_bodies)
async def test_any_publish_body_gets_a_coded_answer(hostile: Gateway, body: bytes) -> None:
    service = {"Authorization": f"Bearer {token('billing', roles=['service'])}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, \
            http.post(hostile.url + "/api/v1/publish", data=body, headers=service) as response:
        answer = await response.json(content_type=None)
    assert response.status in {202, 400, 403, 404}, (response.status, answer, body)
    if response.status == 202:
        assert answer["ok"] is True
    else:
        assert answer["error"]["code"] in {"BAD_REQUEST", "FORBIDDEN", "UNKNOWN_ASSET"}, answer
    await still_serving(hostile)


async def test_services_cannot_forge_the_gateways_own_events(hostile: Gateway) -> None:
    service = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}
    async with aiohttp.ClientSession() as http:
        for event in ["price:update", "auth:expiring", "session:closed"]:
            async with http.post(hostile.url + "/api/v1/publish", json={"event": event, "user": "good"},
                                 headers=service) as response:
                assert response.status == 403, event


# Tokens in every placement.

def forged(header: dict[str, Any], claims: dict[str, Any], secret: str | None) -> str:
    """Any header and claims, HMAC-SHA256-signed with `secret` whatever `alg` says, or unsigned."""
    signing_input = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                             for part in (header, claims))
    signature = b"" if secret is None else hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


claim_values = (st.none() | st.integers(-(2**70), 2**70) | st.text(max_size=20)
                | st.lists(st.text(max_size=5), max_size=3))
jwts = st.builds(
    forged,
    header=st.fixed_dictionaries({"alg": st.sampled_from(["none", "None", "HS256", "RS256", "ES256", "HS512", ""])}),
    claims=st.fixed_dictionaries({}, optional={
        "sub": st.sampled_from(["alice", ""]) | claim_values,
        "exp": st.sampled_from([int(time.time()) + 3600, int(time.time()) - 3600]) | claim_values,
        "roles": claim_values, "assets": claim_values, "nbf": claim_values, "iat": claim_values,
    }),
    secret=st.sampled_from([SECRET, "another-secret-of-sufficient-length-123", None]),
)
tokens = jwts | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300) \
    | st.sampled_from(["", "Bearer", "a.b.c", "x" * 5000])


@EXAMPLES
@given(candidate=tokens, placement=st.sampled_from(["auth", "query", "header"]))
@example(candidate=token("alice"), placement="auth")
@example(candidate=token("alice"), placement="query")
@example(candidate=token("alice", roles=["risk"]), placement="header")
async def test_any_token_is_accepted_only_if_valid(hostile: Gateway, candidate: str, placement: str) -> None:
    options: dict[str, Any] = {
        "auth": {"auth": {"token": candidate}},
        "query": {"query": f"token={quote(candidate)}"},
        "header": {"headers": {"Authorization": f"Bearer {candidate}"}},
    }[placement]
    expected_valid = _valid(candidate)
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    url = hostile.url + (f"?{options.pop('query')}" if "query" in options else "")
    try:
        await client.connect(url, transports=["websocket"], wait_timeout=10, **options)
        assert expected_valid, f"accepted an invalid token {candidate!r}"
    except Exception:
        assert errors, "refused without a connect_error"
        assert errors[0]["data"]["code"] in REFUSAL_CODES, errors
        assert not expected_valid, (candidate, errors)
    finally:
        await client.disconnect()


def _valid(candidate: str) -> bool:
    """The independent oracle: HS256 with the gateway's secret, exp and a non-empty string sub."""
    try:
        claims = jwt.decode(candidate, SECRET, algorithms=["HS256"], leeway=10, options={"require": ["exp", "sub"]})
    except Exception:
        return False
    roles, assets = claims.get("roles", []), claims.get("assets")
    return (isinstance(claims["sub"], str) and 0 < len(claims["sub"]) <= 256
            and isinstance(roles, list) and all(isinstance(r, str) and 0 < len(r) <= 64 for r in roles)
            and (assets is None or (isinstance(assets, list) and all(isinstance(a, str) for a in assets)))
            and len(candidate) <= 4096)


# Feed messages: straight into PriceBook for volume, then some through real Redis.

catalog_names = st.sampled_from([BTC, ETH, SOL, "btc_usdc_perp", "DOGE", ""])
numbers = (st.integers(-(2**64), 2**64) | st.sampled_from([0, 1, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1])
           | st.floats() | st.booleans() | st.none() | st.text(max_size=5))
ticks = st.fixed_dictionaries({}, optional={"asset": catalog_names, "bid": numbers, "ask": numbers,
                                            "seq": numbers, "ts": numbers})
feed_messages = (ticks.map(lambda t: json.dumps(t, allow_nan=True)) | json_values.map(json.dumps)
                 | st.text(max_size=100) | st.binary(max_size=100))


@settings(max_examples=1000, deadline=None)
@given(messages=st.lists(feed_messages, max_size=20))
def test_price_book_accepts_only_sane_ticks(messages: list[str | bytes]) -> None:
    book = PriceBook(Catalog(parse_assets(ASSETS)))
    last: dict[str, int] = {}
    for raw in messages:
        try:
            update = book.accept(raw)
        except TickRejected:
            continue
        assert update["asset"] in {BTC, ETH, SOL}
        assert 0 <= update["bid"] <= update["ask"] <= MAX_SAFE_INTEGER
        assert update["seq"] > last.get(update["asset"], 0)
        last[update["asset"]] = update["seq"]
        assert book.latest(update["asset"]) == update


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(feed_messages, min_size=1, max_size=30))
async def test_feed_garbage_through_redis_is_dropped(hostile: Gateway, messages: list[str | bytes]) -> None:
    async with connected(hostile.url, auth={"token": token("good")}) as client:
        await client.call("price:subscribe", [SOL])
        await publish(hostile.env["REALTIME_REDIS_URL"], hostile.env["REALTIME_PRICE_CHANNEL"],
                      *[m for m in messages if SOL not in str(m)], {"asset": SOL, "bid": 1, "ask": 2})
        update = (await client.wait_for("price:update", timeout=10))[-1]
        assert update["asset"] == SOL and update["bid"] == 1
    await still_serving(hostile)
