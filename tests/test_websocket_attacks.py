"""Attacks on the websocket frame layer, against a gateway with default settings, on both engines (issue 18).

Each attack runs from a thread on a blocking socket, upgraded and
unauthenticated (no CONNECT, no token, as an attacker needs none), while the
test's loop times `GET /health` over and over and samples the pod's RSS:

- a TEXT frame without FIN, then empty continuation frames (finding 1: each
  used to re-sum every fragment so far, and none counted against the bound);
- pings from a socket that never reads (finding 2: PONGs went around the
  writer's bound, and the socket was read while its writes were paused);
- a frame that declares 16 MiB and streams it;
- a flood of tiny whole messages.

The loop may not stall and memory may not grow past the documented
per-connection bounds (README, Security). The issue's bound is 100 ms of
event-loop stall. The pod measures its own loop (`realtime_event_loop_lag_seconds`,
the worst late wake-up of each half second, scraped every 200 ms): on the
default engine that is asserted under `LOOP_BOUND` (100 ms). `/health` is also asked every 20 ms, an
answer seen from outside: there the test process, the gateway and the
attacker thread compete for the same two cores, so its bound is
`HEALTH_BOUND` (300 ms). The attacks of the issue stalled the pod for 3.7 s
and 31 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from realtime.waits import cancel
from tests.support import Gateway, GatewayFactory, sample, scrape, token
from tests.support.probe import CONTINUATION, PING, PONG, TEXT, Probe, frame
from tests.support.processes import rss_bytes
from tests.support.wire import tcp_send_buffer_max

pytestmark = pytest.mark.timing  # bounds on how soon the pod answers and delivers

ENGINES = pytest.mark.parametrize("engine", ["lean", "stock"])
LOOP_BOUND = 0.1  # seconds of event-loop stall, as the pod measures it; see the module's docstring
HEALTH_BOUND = 0.3  # seconds for a /health answer, as the test sees it
LAG_GAUGE = "realtime_event_loop_lag_seconds"
# The tests' gateways turn overload mode off; its default is what measures the loop (and no tick flows here).
DEFAULT_OVERLOAD = {"overload_lag": None}
# The documented per-connection bound at default settings (docs/websocket.md): under 6 MiB, most of it
# the writer's 1 MiB and 64 waiting messages of 64 KiB. The pod's RSS also moves with the allocator.
RSS_BOUND = 8 * 1024 * 1024
PROBE_SECONDS = 2.0  # /health is timed this long at least, however soon an attack ends


def upgraded(port: int, receive_buffer: int | None = None) -> socket.socket:
    """A blocking socket upgraded to a websocket, past the Engine.IO OPEN; no Socket.IO CONNECT."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    first, size = sock.recv(2)
    assert first == 0x81 and sock.recv(size).startswith(b"0")  # the OPEN packet
    return sock


@dataclass
class Attack:
    """What an attacker thread did: bytes sent, and whether (and how) the server ended the connection."""

    sent: int = 0
    close_code: int | None = None
    ended: bool = False
    seconds: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def close_code_in(data: bytes) -> int | None:
    """The code of the first close frame among the server's frames in `data`."""
    pos = 0
    while pos + 2 <= len(data):
        first, size = data[pos], data[pos + 1] & 0x7F
        head = 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
        if first & 0x0F == 0x8 and pos + head + 2 <= len(data):
            return int(struct.unpack_from("!H", data, pos + head)[0])
        pos += head + size
    return None


def flood(sock: socket.socket, attack: Attack, chunk: bytes, limit: int, seconds: float, *,
          read: bool = True) -> None:
    """Send `chunk` until `limit` bytes or `seconds` pass, or the server ends the connection; then, if `read`,
    read what it sent until it closes."""
    started = time.monotonic()
    sock.settimeout(1.0)
    try:
        while attack.sent < limit and time.monotonic() - started < seconds:
            try:
                attack.sent += sock.send(chunk)
            except TimeoutError:
                continue  # the server is not reading: keep trying until the time is up
        if read:
            sock.settimeout(10.0)
            received = b""
            while data := sock.recv(65536):
                received += data
            attack.close_code = close_code_in(received)
            attack.ended = True
    except (BrokenPipeError, ConnectionResetError):
        attack.ended = True
    except TimeoutError:
        pass
    except BaseException as error:  # surfaced by the test
        attack.error = error
    finally:
        attack.seconds = time.monotonic() - started
        attack.done.set()


@dataclass
class Probed:
    """What the pod showed while attacked: every /health time, its own loop lags, its RSS growth."""

    attack: Attack
    health: list[float]
    lags: list[float]
    growth: int

    def report(self, name: str) -> str:
        attack = self.attack
        return (f"{name}: {attack.sent} bytes sent in {attack.seconds:.1f}s, closed with {attack.close_code}, "
                f"/health max {max(self.health) * 1000:.0f} ms over {len(self.health)}, loop lag max "
                f"{max(self.lags) * 1000:.0f} ms over {len(self.lags)}, RSS +{self.growth / 2**20:.1f} MiB")

    def assert_answering(self, engine: str) -> None:
        # The loop bound holds the engine that ships by default; python-engineio's (REALTIME_ENGINE=stock) is
        # held to the /health bound (it answered a ping flood 178 ms late once, under the whole suite).
        if engine == "lean":
            assert self.lags and max(self.lags) < LOOP_BOUND, self.lags
        assert max(self.health) < HEALTH_BOUND, self.health
        assert self.growth < RSS_BOUND, self.growth


async def under_attack(gateway: Gateway, run: Callable[[Attack], None], seconds: float) -> Probed:
    """Run the attack in a thread while timing /health and scraping the pod's loop lag (for `PROBE_SECONDS` at
    least)."""
    assert gateway.process is not None
    pid = gateway.process.pid
    attack = Attack()
    baseline = rss_bytes(pid)
    peak = baseline
    times: list[float] = []
    lags: list[float] = []
    thread = threading.Thread(target=run, args=(attack,), daemon=True)

    def attacking(begun: float) -> bool:
        now = time.monotonic()
        return (not attack.done.is_set() or now < begun + PROBE_SECONDS) and now < begun + seconds

    async def watch_lag(begun: float) -> None:
        # Each scrape shows the worst of the last half second: every 200 ms misses none.
        while attacking(begun):
            lags.append(sample(await scrape(gateway.url), LAG_GAUGE))
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # the window the attack ended in
        lags.append(sample(await scrape(gateway.url), LAG_GAUGE))

    async with aiohttp.ClientSession() as http:
        thread.start()
        begun = time.monotonic()
        watching = asyncio.create_task(watch_lag(begun))
        try:
            while attacking(begun):
                started = time.monotonic()
                async with http.get(gateway.url + "/health") as response:
                    assert response.status == 200
                times.append(time.monotonic() - started)
                peak = max(peak, rss_bytes(pid))
                # The interval between two probes of /health, not a wait for something.
                await asyncio.sleep(0.02)
            await watching
        finally:
            await cancel(watching)
    await asyncio.to_thread(attack.done.wait, 15)
    thread.join(5)
    if attack.error is not None:
        raise attack.error
    return Probed(attack, times, lags, peak - baseline)


@ENGINES
async def test_empty_continuation_frames_are_closed_with_1009_and_the_pod_answers(
        start_process: GatewayFactory, engine: str) -> None:
    gateway = start_process(engine=engine, **DEFAULT_OVERLOAD)
    sock = upgraded(gateway.port)
    # 150 KB on the wire: 25 000 empty continuation frames after an unfinished TEXT frame.
    chunk = frame(TEXT, b"4", fin=False) + frame(CONTINUATION, fin=False) * 25_000

    def run(attack: Attack) -> None:
        # The stock engine takes the flood (aiohttp's reader has no fragment bound; it is linear).
        flood(sock, attack, chunk, len(chunk), 30, read=engine == "lean")

    try:
        probed = await under_attack(gateway, run, 40)
    finally:
        sock.close()
    print(probed.report("continuation flood"))
    if engine == "lean":
        assert probed.attack.ended and probed.attack.close_code == 1009
    probed.assert_answering(engine)


@ENGINES
async def test_a_ping_flood_that_never_reads_is_bounded_and_cut(start_process: GatewayFactory, engine: str) -> None:
    # Pings every second, answered within one: a client that reads nothing is dropped after ~2 s, and its
    # socket cut CLOSE_TIMEOUT (5 s) later at most, whatever is still queued for it.
    gateway = start_process(engine=engine, ping_interval=1, ping_timeout=1, **DEFAULT_OVERLOAD)
    sock = upgraded(gateway.port, receive_buffer=4096)
    chunk = frame(PING, b"p" * 125) * 500  # 65 KB a send, each ping asking for a 127-byte PONG

    def run(attack: Attack) -> None:
        flood(sock, attack, chunk, 256 * 2**20, 12, read=False)

    try:
        probed = await under_attack(gateway, run, 20)
    finally:
        sock.close()
    print(probed.report("ping flood"))
    if engine == "lean":  # python-engineio's websocket stays open (its memory is bounded all the same)
        assert probed.attack.ended, "the connection was never cut"
    probed.assert_answering(engine)


@ENGINES
async def test_a_frame_over_the_bound_is_refused_from_its_header(start_process: GatewayFactory, engine: str) -> None:
    gateway = start_process(engine=engine, **DEFAULT_OVERLOAD)
    sock = upgraded(gateway.port)
    head = bytes((0x81, 0xFF)) + (16 << 20).to_bytes(8, "big") + os.urandom(4)

    def run(attack: Attack) -> None:
        sock.sendall(head)
        flood(sock, attack, os.urandom(65536), 16 << 20, 20)

    try:
        probed = await under_attack(gateway, run, 30)
    finally:
        sock.close()
    print(probed.report("16 MiB frame"))
    assert probed.attack.ended
    if engine == "lean":
        assert probed.attack.close_code == 1009
    probed.assert_answering(engine)


@ENGINES
async def test_a_flood_of_tiny_messages_leaves_the_pod_answering(start_process: GatewayFactory,
                                                                 engine: str) -> None:
    # Engine.IO NOOPs ("6"), which the server drops: as cheap a whole message as a client can send.
    gateway = start_process(engine=engine, **DEFAULT_OVERLOAD)
    sock = upgraded(gateway.port)
    chunk = frame(TEXT, b"6") * 10_000

    def run(attack: Attack) -> None:
        flood(sock, attack, chunk, 8 * 2**20, 5, read=False)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    try:
        probed = await under_attack(gateway, run, 30)
    finally:
        sock.close()
    print(probed.report("tiny messages"))
    probed.assert_answering(engine)


@ENGINES
async def test_a_client_that_stops_reading_then_reads_gets_every_pong_in_order(
        start_process: GatewayFactory, engine: str) -> None:
    # Reading stops while the answers cannot be written, and starts again as they drain: nothing is lost.
    gateway = start_process(engine=engine, **DEFAULT_OVERLOAD)
    probe = await Probe.open(gateway.url, {"token": token("reader")}, receive_buffer=4096)
    try:
        count = 2 * tcp_send_buffer_max() // 100  # pongs: twice what the server's socket may buffer
        probe.write(b"".join(frame(PING, f"{i:08d}".encode().ljust(100, b".")) for i in range(count)))
        await asyncio.sleep(1)  # the server fills what it can and stops
        for i in range(count):
            received = await probe.read()
            assert received.opcode == PONG and received.payload[:8] == f"{i:08d}".encode(), (i, received)
        ack_id, payload = probe.event("price:subscribe", "BTC_USDC_PERP")
        probe.send(TEXT, payload)
        assert (await probe.ack(ack_id))["ok"] is True
    finally:
        await probe.close()
